"""Plain-language labels of features, in English and French, grouped into business drivers.

A driver is what a salesperson thinks in: "pricing page visits" covers the 7/30/90-day and
total counts and the recency of that event; "company size" covers one attribute. Reasons and
reports speak per driver, phrased with the lead's own values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from features.spec import FeatureSpec
from features.vocabulary import (
    ACTIVE_DAYS_30D,
    ACTIVE_DAYS_TOTAL,
    EMAIL_DOMAIN_KIND,
    ENGAGEMENT_DECAYED,
    EVENTS_TOTAL,
    LEAD_AGE_DAYS,
    OTHER_EVENTS_TOTAL,
    count_feature,
    property_feature,
    recency_feature,
    split_base,
    split_value_words,
    type_words,
)

LANGUAGES: tuple[str, ...] = ("en", "fr")

# event type -> language -> (did it once, did it {n} times, never did it, driver title).
# Phrased the way a salesperson says it: "Viewed 12 pages of our website in the last 7 days".
EVENT_PHRASES: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "page_view": {
        "en": ("Viewed a page of our website", "Viewed {n} pages of our website", "Never viewed our website", "Website visits"),
        "fr": ("A consulté une page du site", "A consulté {n} pages du site", "N'a jamais consulté le site", "Visites du site"),
    },
    "pricing_page_view": {
        "en": ("Visited the pricing page", "Visited the pricing page {n} times", "Never visited the pricing page", "Pricing page visits"),
        "fr": ("A visité la page tarifs", "A visité la page tarifs {n} fois", "N'a jamais visité la page tarifs", "Visites de la page tarifs"),
    },
    "email_open": {
        "en": ("Opened one of our emails", "Opened {n} of our emails", "Never opened our emails", "Email opens"),
        "fr": ("A ouvert un de nos emails", "A ouvert {n} de nos emails", "N'a jamais ouvert nos emails", "Emails ouverts"),
    },
    "email_click": {
        "en": ("Clicked a link in our emails", "Clicked links in our emails {n} times", "Never clicked in our emails", "Email clicks"),
        "fr": ("A cliqué dans un de nos emails", "A cliqué {n} fois dans nos emails", "N'a jamais cliqué dans nos emails", "Clics dans les emails"),
    },
    "whitepaper_download": {
        "en": ("Downloaded a white paper", "Downloaded {n} white papers", "Never downloaded a white paper", "White paper downloads"),
        "fr": ("A téléchargé un livre blanc", "A téléchargé {n} livres blancs", "N'a jamais téléchargé de livre blanc", "Livres blancs téléchargés"),
    },
    "webinar_registration": {
        "en": ("Registered for a webinar", "Registered for {n} webinars", "Never registered for a webinar", "Webinar registrations"),
        "fr": ("S'est inscrit à un webinaire", "S'est inscrit à {n} webinaires", "Ne s'est jamais inscrit à un webinaire", "Inscriptions aux webinaires"),
    },
    "webinar_attended": {
        "en": ("Attended a webinar", "Attended {n} webinars", "Never attended a webinar", "Webinars attended"),
        "fr": ("A assisté à un webinaire", "A assisté à {n} webinaires", "N'a jamais assisté à un webinaire", "Webinaires suivis"),
    },
    "form_submit": {
        "en": ("Filled in a form", "Filled in {n} forms", "Never filled in a form", "Forms filled in"),
        "fr": ("A rempli un formulaire", "A rempli {n} formulaires", "N'a jamais rempli de formulaire", "Formulaires remplis"),
    },
    "demo_request": {
        "en": ("Requested a demo", "Requested a demo {n} times", "Never requested a demo", "Demo requests"),
        "fr": ("A demandé une démo", "A demandé une démo {n} fois", "N'a jamais demandé de démo", "Demandes de démo"),
    },
    "meeting_booked": {
        "en": ("Booked a meeting", "Booked {n} meetings", "Never booked a meeting", "Meetings booked"),
        "fr": ("A pris un rendez-vous", "A pris {n} rendez-vous", "N'a jamais pris rendez-vous", "Rendez-vous pris"),
    },
    "unsubscribe": {
        "en": ("Unsubscribed", "Unsubscribed {n} times", "Never unsubscribed", "Unsubscribes"),
        "fr": ("S'est désabonné", "S'est désabonné {n} fois", "Ne s'est jamais désabonné", "Désabonnements"),
    },
    "email_bounce": {
        "en": ("An email to this lead bounced", "{n} emails to this lead bounced", "No email to this lead bounced", "Email bounces"),
        "fr": (
            "Un email à ce contact est revenu en erreur",
            "{n} emails à ce contact sont revenus en erreur",
            "Aucun email à ce contact n'est revenu en erreur",
            "Emails revenus en erreur",
        ),
    },
}

ATTRIBUTE_TITLES: dict[str, dict[str, str]] = {
    "industry": {"en": "Industry", "fr": "Secteur"},
    "company_size": {"en": "Company size", "fr": "Taille de l'entreprise"},
    "employee_count": {"en": "Employees", "fr": "Effectif"},
    "country": {"en": "Country", "fr": "Pays"},
    "job_role": {"en": "Job role", "fr": "Fonction"},
    "seniority": {"en": "Seniority", "fr": "Niveau hiérarchique"},
    "source": {"en": "Acquisition source", "fr": "Source d'acquisition"},
    "marketing_consent": {"en": "Marketing consent", "fr": "Consentement marketing"},
    EMAIL_DOMAIN_KIND: {"en": "Email address", "fr": "Adresse email"},
}

_OTHER_DRIVERS: dict[str, dict[str, str]] = {
    "engagement": {"en": "Recent engagement", "fr": "Engagement récent"},
    "activity_days": {"en": "Active days", "fr": "Jours d'activité"},
    "volume": {"en": "Total activity", "fr": "Activité totale"},
    "lead_age": {"en": "Lead age", "fr": "Ancienneté du lead"},
}

# attribute -> value -> (English label, French value). French labels read "<title> : <value>",
# English ones the way a salesperson says it; a value not listed here is shown as it is.
ATTRIBUTE_VALUE_PHRASES: dict[str, dict[str, tuple[str, str]]] = {
    "industry": {
        "software": ("Industry: software", "logiciel"),
        "financial_services": ("Industry: financial services", "services financiers"),
        "healthcare": ("Industry: healthcare", "santé"),
        "manufacturing": ("Industry: manufacturing", "industrie"),
        "retail": ("Industry: retail", "commerce de détail"),
        "education": ("Industry: education", "éducation"),
        "public_sector": ("Industry: public sector", "secteur public"),
        "other": ("Industry: other", "autre"),
    },
    "company_size": {
        "1-9": ("Company size 1–9 employees", "1 à 9 salariés"),
        "10-49": ("Company size 10–49 employees", "10 à 49 salariés"),
        "50-199": ("Company size 50–199 employees", "50 à 199 salariés"),
        "200-499": ("Company size 200–499 employees", "200 à 499 salariés"),
        "500-999": ("Company size 500–999 employees", "500 à 999 salariés"),
        "1000+": ("Company size 1,000+ employees", "1 000 salariés et plus"),
    },
    "country": {
        "US": ("Based in the United States", "États-Unis"),
        "GB": ("Based in the United Kingdom", "Royaume-Uni"),
        "DE": ("Based in Germany", "Allemagne"),
        "FR": ("Based in France", "France"),
        "CA": ("Based in Canada", "Canada"),
        "AU": ("Based in Australia", "Australie"),
        "ES": ("Based in Spain", "Espagne"),
        "NL": ("Based in the Netherlands", "Pays-Bas"),
    },
    "job_role": {
        "marketing": ("Works in marketing", "marketing"),
        "sales": ("Works in sales", "commercial"),
        "it": ("Works in IT", "informatique"),
        "finance": ("Works in finance", "finance"),
        "operations": ("Works in operations", "opérations"),
        "hr": ("Works in HR", "ressources humaines"),
        "student": ("Student", "étudiant"),
        "other": ("Job role: other", "autre"),
    },
    "seniority": {
        "intern": ("Intern", "stagiaire"),
        "individual_contributor": ("Individual contributor", "collaborateur sans encadrement"),
        "manager": ("Manager", "manager"),
        "director": ("Director-level contact", "directeur"),
        "vp": ("VP-level contact", "vice-président"),
        "c_level": ("C-level executive", "membre de la direction générale"),
    },
    "source": {
        "organic_search": ("Came from organic search", "recherche naturelle"),
        "paid_search": ("Came from paid search", "recherche payante"),
        "referral": ("Came from a referral", "recommandation"),
        "webinar": ("Came from a webinar", "webinaire"),
        "event": ("Came from an event", "événement"),
        "partner": ("Came from a partner", "partenaire"),
        "cold_outbound": ("Came from cold outreach", "prospection à froid"),
        "social": ("Came from social media", "réseaux sociaux"),
    },
    "marketing_consent": {
        "yes": ("Agreed to receive marketing emails", "oui"),
        "no": ("Did not agree to marketing emails", "non"),
    },
    EMAIL_DOMAIN_KIND: {
        "corporate": ("Uses a company email address", "domaine d'entreprise"),
        "free": ("Uses a free webmail address", "messagerie gratuite"),
        "disposable": ("Uses a disposable email address", "adresse jetable"),
        "invalid": ("Invalid email address", "invalide"),
    },
}


def event_phrases(event_type: str, language: str, spec: FeatureSpec | None = None) -> tuple[str, str, str, str]:
    """(did it once, did it {n} times, never did it, title) of an interaction type.

    The project's own words for the built-in types; `spec.type_labels` for a type the config
    labels; otherwise phrases generated from the type's name ("Web Session": "Had a web session
    event", "A eu un événement « web session »").
    """
    label = spec.type_labels.get(event_type, {}).get(language) if spec is not None else None  # type: ignore[call-overload]
    if label is not None:
        sep = " : " if language == "fr" else ": "
        none = "aucun" if language == "fr" else "none"
        return (label.once or f"{label.title}{sep}1", label.many or f"{label.title}{sep}{{n}}",
                label.never or f"{label.title}{sep}{none}", label.title)  # fmt: skip
    if event_type in EVENT_PHRASES:
        return EVENT_PHRASES[event_type][language]
    base, value = split_base(event_type), split_value_words(event_type)
    if base is not None and value is not None:
        # A split type reads as its type, with the split value: "Email clicks (newsletter)".
        return tuple(f"{phrase} ({value})" for phrase in event_phrases(base, language, spec))  # type: ignore[return-value]
    words = type_words(event_type)
    if language == "fr":
        return (f"A eu un événement « {words} »", f"A eu {{n}} événements « {words} »",
                f"Aucun événement « {words} »", f"Événements « {words} »")  # fmt: skip
    return (f"Had a {words} event", f"Had {{n}} {words} events", f"No {words} event", f"{words.capitalize()} events")


def driver_of(feature: str, spec: FeatureSpec) -> str:
    """The business driver a feature belongs to (an event type, an attribute, or a summary)."""
    for event_type in spec.interaction_types:
        names = {count_feature(event_type, w) for w in spec.windows_days}
        names |= {count_feature(event_type, None), recency_feature(event_type)}
        if feature in names:
            return event_type
    found = _property_of(feature, spec)
    if found is not None:
        return found[0]
    summary = {
        ENGAGEMENT_DECAYED: "engagement",
        ACTIVE_DAYS_30D: "activity_days",
        ACTIVE_DAYS_TOTAL: "activity_days",
        EVENTS_TOTAL: "volume",
        OTHER_EVENTS_TOTAL: "volume",
        LEAD_AGE_DAYS: "lead_age",
    }
    return summary.get(feature, feature)


def driver_title(driver: str, language: str = "en", spec: FeatureSpec | None = None) -> str:
    """A short title for a driver ("Pricing page visits"); `spec` knows the learned interaction types."""
    _check_language(language)
    if driver in EVENT_PHRASES or (spec is not None and driver in spec.interaction_types):
        return event_phrases(driver, language, spec)[3]
    if spec is not None and driver in spec.properties:
        return property_phrases(driver, language, spec)[3]
    if driver in _OTHER_DRIVERS:
        return _OTHER_DRIVERS[driver][language]
    if driver in ATTRIBUTE_TITLES:
        return ATTRIBUTE_TITLES[driver][language]
    return driver.replace("_", " ").capitalize()


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {list(LANGUAGES)}, got {language!r}")


def _days_ago(days: float, language: str) -> str:
    d = int(math.floor(days))
    if language == "fr":
        return "aujourd'hui" if d == 0 else ("hier" if d == 1 else f"il y a {d} jours")
    return "today" if d == 0 else ("yesterday" if d == 1 else f"{d} days ago")


def _in_last(window: int, language: str) -> str:
    return f"au cours des {window} derniers jours" if language == "fr" else f"in the last {window} days"


def _whole(n: float, language: str) -> str:
    """A whole number with the thousands separator of the language: 1,200 / 1 200."""
    text = f"{int(round(n)):,}"
    return text.replace(",", " ") if language == "fr" else text


def _plural(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


class DriverPhrase(NamedTuple):
    """A driver phrased with one lead's values.

    Attributes:
        label: Plain words, e.g. "Visited the pricing page 3 times in the last 7 days".
        value: The value the label quotes (a count, days, a category), e.g. 3.
        feature: The feature whose value that is, e.g. "n_pricing_page_view_7d".
    """

    label: str
    value: object
    feature: str


def _as_float(value: object) -> float:
    # Feature values are numbers here (counts, days, scores); anything else is a caller's bug.
    if type(value) is float:  # the common case, checked cheaply first
        return value
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class _EventPhrasing:
    """ "Visited the pricing page 3 times in the last 7 days", "Unsubscribed 12 days ago"."""

    __slots__ = ("language", "many", "most_recently", "never", "once", "recency", "total", "windows")

    def __init__(self, driver: str, spec: FeatureSpec, language: str) -> None:
        self.once, self.many, self.never, _ = event_phrases(driver, language, spec)
        self.total, self.recency = count_feature(driver, None), recency_feature(driver)
        # Shortest window first: the count feature and its words.
        self.windows = [(count_feature(driver, window), _in_last(window, language)) for window in spec.windows_days]
        self.most_recently = "la dernière" if language == "fr" else "most recently"
        self.language = language

    def __call__(self, values: Mapping[str, object]) -> DriverPhrase:
        total = int(_as_float(values[self.total]))
        if total == 0:
            return DriverPhrase(self.never, 0, self.total)
        ago = _days_ago(_as_float(values[self.recency]), self.language)
        if total == 1:
            return DriverPhrase(f"{self.once} {ago}", 1, self.total)
        # The shortest window holding at least two of them: recent bursts read as such.
        for feature, in_last in self.windows:
            n = int(_as_float(values[feature]))
            if n >= 2:
                return DriverPhrase(f"{self.many.format(n=n)} {in_last}", n, feature)
        return DriverPhrase(f"{self.many.format(n=total)}, {self.most_recently} {ago}", total, self.total)


def _property_of(feature: str, spec: FeatureSpec) -> tuple[str, str, int | None] | None:
    """(property, aggregate, window) of a property feature; None for another feature."""
    for name, aggregates in spec.properties.items():
        for aggregate in aggregates:
            for window in (*spec.windows_days, None):
                if feature == property_feature(name, aggregate, window):
                    return name, aggregate, window
    return None


def property_phrases(name: str, language: str, spec: FeatureSpec) -> tuple[str, str, str, str]:
    """(sum with {x}, max with {x}, no value at all, title) of an event property.

    `spec.property_labels` for a property the config labels (missing phrases generated from
    its title); otherwise phrases generated from its name ("session_duration_s": "Total session
    duration s: {x}", "Highest session duration s: {x}").
    """
    label = spec.property_labels.get(name, {}).get(language)  # type: ignore[call-overload]
    title = label.title if label is not None else name.replace("_", " ")
    # Within a sentence the title starts lower-case, at its start upper-case; the rest as written.
    words, start = title[:1].lower() + title[1:], title[:1].upper() + title[1:]
    fr = language == "fr"
    sep = " : " if fr else ": "
    generated = (
        f"Total {words}{sep}{{x}}" if not fr else f"{start}, total{sep}{{x}}",
        f"Highest {words}{sep}{{x}}" if not fr else f"{start}, maximum{sep}{{x}}",
        f"No {words} recorded" if not fr else f"{start}{sep}aucune valeur",
        start,
    )
    if label is None:
        return generated
    return (label.sum or generated[0], label.max or generated[1], label.never or generated[2], generated[3])


def _amount(x: float, language: str) -> str:
    """A property value as the label writes it: whole with thousands separators, else one decimal."""
    text = f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"
    return text.replace(",", " ").replace(".", ",") if language == "fr" else text


def _quoted(x: float) -> float | int:
    # The value a property label quotes, as written there: whole numbers as int, else one decimal.
    return int(x) if float(x).is_integer() else round(x, 1)


def _since(window: int | None, language: str) -> str:
    if window is not None:
        return _in_last(window, language)
    return "depuis la création du lead" if language == "fr" else "since the lead was created"


class _PropertyPhrasing:
    """ "42 pages viewed in the last 7 days", "Up to 9 pages in one session in the last 30 days".

    The sum when the spec computes it, else the largest value; over the shortest window with a
    value (a sum above 0), else since creation; "never" when there is none at all.
    """

    __slots__ = ("is_sum", "language", "never", "phrase", "total", "windows")

    def __init__(self, name: str, spec: FeatureSpec, language: str) -> None:
        sum_phrase, max_phrase, self.never, _ = property_phrases(name, language, spec)
        self.is_sum = "sum" in spec.properties[name]
        aggregate = "sum" if self.is_sum else "max"
        self.phrase = sum_phrase if self.is_sum else max_phrase
        # The windows, shortest first, then since creation: the feature and its words.
        self.windows = [
            (property_feature(name, aggregate, window), _since(window, language)) for window in (*spec.windows_days, None)
        ]
        self.total = property_feature(name, aggregate, None)
        self.language = language

    def __call__(self, values: Mapping[str, object]) -> DriverPhrase:
        for feature, since in self.windows:
            x = values[feature]
            if _missing(x) or (self.is_sum and _as_float(x) == 0):
                continue
            shown = _quoted(_as_float(x))
            return DriverPhrase(f"{self.phrase.format(x=_amount(shown, self.language))} {since}", shown, feature)
        return DriverPhrase(self.never, 0 if self.is_sum else None, self.total)


def _describe_summary(driver: str, values: Mapping[str, object], language: str) -> DriverPhrase:
    """Labels of the drivers that summarise all interactions (engagement, activity, age)."""
    fr = language == "fr"
    if driver == "engagement":
        x = round(_as_float(values[ENGAGEMENT_DECAYED]), 1)
        # "No activity" only when the lead really had none lately: interactions of types the
        # score gives no weight (raw types counted as other events) leave the score at 0.
        if x == 0 and _as_float(values.get(ACTIVE_DAYS_30D, 0.0)) == 0:
            return DriverPhrase("Aucune activité ces dernières semaines" if fr else "No activity in recent weeks", 0.0, ENGAGEMENT_DECAYED)
        # The score weighs each interaction by type and halves its weight every half-life.
        word = "Score d'engagement récent" if fr else "Recent engagement score"
        return DriverPhrase(f"{word} : {x:.1f}".replace(".", ",") if fr else f"{word}: {x:.1f}", x, ENGAGEMENT_DECAYED)
    if driver == "activity_days":
        n = int(_as_float(values[ACTIVE_DAYS_30D]))
        if n == 0:
            return DriverPhrase("Aucune activité ces 30 derniers jours" if fr else "No activity in the last 30 days", 0, ACTIVE_DAYS_30D)
        if fr:
            return DriverPhrase(f"Actif {_plural(n, 'jour', 'jours')} sur les 30 derniers jours", n, ACTIVE_DAYS_30D)
        return DriverPhrase(f"Active on {_plural(n, 'day', 'days')} in the last 30 days", n, ACTIVE_DAYS_30D)
    if driver == "volume":
        n = int(_as_float(values[EVENTS_TOTAL]))
        if fr:
            return DriverPhrase(f"{_plural(n, 'interaction', 'interactions')} depuis la création du lead", n, EVENTS_TOTAL)
        return DriverPhrase(f"{_plural(n, 'interaction', 'interactions')} since the lead was created", n, EVENTS_TOTAL)
    d = int(_as_float(values[LEAD_AGE_DAYS]))
    return DriverPhrase(
        f"Lead créé {_days_ago(d, language)}" if fr else f"Lead created {_days_ago(d, language)}", d, LEAD_AGE_DAYS
    )


class _SummaryPhrasing:
    """`_describe_summary` of one driver in one language."""

    __slots__ = ("driver", "language")

    def __init__(self, driver: str, language: str) -> None:
        self.driver, self.language = driver, language

    def __call__(self, values: Mapping[str, object]) -> DriverPhrase:
        return _describe_summary(self.driver, values, self.language)


class _AttributePhrasing:
    """ "Company size 200–499 employees" / "Taille de l'entreprise : 200 à 499 salariés"."""

    __slots__ = ("driver", "fr", "language", "phrases", "title")

    def __init__(self, driver: str, language: str) -> None:
        self.title = driver_title(driver, language)
        self.phrases = ATTRIBUTE_VALUE_PHRASES.get(driver, {})
        self.driver, self.language, self.fr = driver, language, language == "fr"

    def __call__(self, values: Mapping[str, object]) -> DriverPhrase:
        if self.driver not in values:
            raise KeyError(f"describe_driver: driver {self.driver!r} has no value among the lead's features")
        label, shown = self.phrase(values[self.driver])
        return DriverPhrase(label, shown, self.driver)

    def phrase(self, value: object) -> tuple[str, object]:
        """(label, the value it quotes) of one value of the attribute."""
        fr, title = self.fr, self.title
        if _missing(value):
            return (f"{title} : inconnu" if fr else f"{title} not known"), None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if str(value) in self.phrases:
            english, french = self.phrases[str(value)]
            return (f"{title} : {french}" if fr else english), value
        if self.driver == "employee_count" and isinstance(value, int | float):
            if fr:
                return f"{title} : {_whole(value, self.language)} salariés", value
            return f"Company has {_whole(value, self.language)} employees", value
        shown = str(value).replace("_", " ")
        return (f"{title} : {shown}" if fr else f"{title}: {shown}"), value


DriverPhrasing = Callable[[Mapping[str, object]], DriverPhrase]
"""`describe_driver` of one driver in one language: a lead's feature values -> its `DriverPhrase`."""


def driver_phrasing(driver: str, spec: FeatureSpec, language: str = "en") -> DriverPhrasing:
    """`describe_driver` of one driver, with its words and feature names looked up once.

    `describe_driver` phrases through it; a loaded model keeps one per driver and language
    (`ScoringModel.phrasings`), so that phrasing a lead's reasons only reads its values.

    Raises:
        ValueError: `language` is not one of `LANGUAGES`.
    """
    _check_language(language)
    if driver in spec.interaction_types or driver in EVENT_PHRASES:
        return _EventPhrasing(driver, spec, language)
    if driver in spec.properties:
        return _PropertyPhrasing(driver, spec, language)
    if driver in _OTHER_DRIVERS:
        return _SummaryPhrasing(driver, language)
    return _AttributePhrasing(driver, language)


def describe_driver(
    driver: str, values: Mapping[str, object], spec: FeatureSpec, language: str = "en"
) -> DriverPhrase:
    """Phrase a driver with one lead's values, as a salesperson would say it.

    English labels read like "Visited the pricing page 3 times in the last 7 days", "Company
    size 200–499 employees", "Unsubscribed 12 days ago"; French ones like "A visité la page
    tarifs 3 fois au cours des 7 derniers jours", and attributes as "<title> : <value>"
    ("Niveau hiérarchique : directeur").

    Args:
        driver: From `driver_of`.
        values: The lead's feature values (name -> value).
        spec: Feature specification (windows).
        language: "en" or "fr".

    Returns:
        The label, the value it quotes and the feature that value is, e.g. ("Visited the
        pricing page 3 times in the last 7 days", 3, "n_pricing_page_view_7d").
    """
    return driver_phrasing(driver, spec, language)(values)


def is_attribute_driver(driver: str, spec: FeatureSpec) -> bool:
    """True when `describe_driver` phrases `driver` from its own value alone (a lead attribute)."""
    return not (driver in spec.interaction_types or driver in EVENT_PHRASES or driver in spec.properties or driver in _OTHER_DRIVERS)


def describe_attribute(driver: str, values: Mapping[str, object], language: str = "en") -> DriverPhrase:
    """`describe_driver` of an attribute driver (`is_attribute_driver`): it reads `values[driver]` only.

    Raises:
        KeyError: `values` has no `driver`.
    """
    _check_language(language)
    return _AttributePhrasing(driver, language)(values)


def _number(x: float, language: str) -> str:
    text = f"{x:,.0f}" if abs(x) >= 100 or float(x).is_integer() else f"{x:.2g}"
    return text.replace(",", " ").replace(".", ",") if language == "fr" else text


def _range(low: float | None, high: float | None, whole: bool, language: str) -> str:
    """[low, high) in words: "2–3", "10 or more", "below 2.5" (whole: counts, days)."""
    fr = language == "fr"
    if low is not None and high is None:
        return f"{_number(low, language)} {'ou plus' if fr else 'or more'}"
    if low is None and high is not None:
        return f"{'moins de' if fr else 'below'} {_number(high, language)}"
    if low is None or high is None:
        raise ValueError("_range: a bucket needs at least one bound")
    if not whole:
        upper = f"à moins de {_number(high, language)}" if fr else f"to under {_number(high, language)}"
        return f"{'de ' if fr else ''}{_number(low, language)} {upper}"
    last = high - 1
    if last == low:
        return _number(low, language)
    return f"{_number(low, language)} à {_number(last, language)}" if fr else f"{_number(low, language)}–{_number(last, language)}"


def describe_bucket(
    feature: str, low: float | None, high: float | None, spec: FeatureSpec, language: str = "en"
) -> str:
    """Plain words for "low <= feature < high" (None: unbounded), for grids and driver tables.

    "Pricing page visits in the last 30 days: 2–3", "Demo requests: last one 0–6 days ago",
    "Visites de la page tarifs (30 derniers jours) : 2 à 3". Both bounds None means the value
    is missing, which for a days-since feature means "never".
    """
    _check_language(language)
    fr = language == "fr"
    driver = driver_of(feature, spec)
    title = driver_title(driver, language, spec)
    sep = " : " if fr else ": "
    missing = low is None and high is None
    for event_type in spec.interaction_types:
        if feature == recency_feature(event_type):
            never = spec.never_seen_days
            if missing or (never is not None and low is not None and low >= never):
                return f"{title}{sep}{'jamais' if fr else 'never'}"
            ago = _range(low, high, True, language)
            if never is not None and (high is None or high > never):  # "never" is the far end of the range
                return f"{title}{sep}{f'la dernière il y a {ago} jours, ou jamais' if fr else f'last one {ago} days ago, or never'}"
            return f"{title}{sep}{f'la dernière il y a {ago} jours' if fr else f'last one {ago} days ago'}"
        if feature == count_feature(event_type, None):
            where = f"{title} depuis la création" if fr else f"{title} since the lead was created"
            return f"{where}{sep}{_range(low, high, True, language)}"
        for window in spec.windows_days:
            if feature == count_feature(event_type, window):
                where = f"{title} ({window} derniers jours)" if fr else f"{title} in the last {window} days"
                return f"{where}{sep}{_range(low, high, True, language)}"
    found = _property_of(feature, spec)
    if found is not None:
        _, aggregate, over = found
        which = {"sum": ("total", "total"), "max": ("highest", "maximum")}[aggregate][1 if fr else 0]
        if fr:
            span = f"{over} derniers jours" if over is not None else "depuis la création"
            where = f"{title}, {which} ({span})"
        else:
            where = f"{title}, {which} {_since(over, language)}"
        if missing:
            return f"{where}{sep}{'aucune valeur' if fr else 'none'}"
        return f"{where}{sep}{_range(low, high, False, language)}"
    summary = {
        ENGAGEMENT_DECAYED: ("Recent engagement score", "Score d'engagement récent", False),
        ACTIVE_DAYS_30D: ("Active days in the last 30 days", "Jours d'activité (30 derniers jours)", True),
        ACTIVE_DAYS_TOTAL: ("Active days since the lead was created", "Jours d'activité depuis la création", True),
        EVENTS_TOTAL: ("Interactions since the lead was created", "Interactions depuis la création", True),
        OTHER_EVENTS_TOTAL: ("Other interactions since the lead was created", "Autres interactions depuis la création", True),
        LEAD_AGE_DAYS: ("Lead age in days", "Ancienneté du lead en jours", True),
    }
    if feature in summary:
        english, french, whole = summary[feature]
        where = french if fr else english
    else:
        where, whole = title, False
    if missing:
        return f"{where}{sep}{'inconnu' if fr else 'not known'}"
    return f"{where}{sep}{_range(low, high, whole, language)}"


def describe_category(driver: str, value: object, language: str = "en") -> str:
    """Plain words for an attribute value: "Director-level contact", "Secteur : santé"."""
    _check_language(language)
    return _AttributePhrasing(driver, language).phrase(value)[0]
