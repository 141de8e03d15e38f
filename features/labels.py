"""Plain-language labels of features, in English and French, grouped into business drivers.

A driver is what a salesperson thinks in: "pricing page visits" covers the 7/30/90-day and
total counts and the recency of that event; "company size" covers one attribute. Reasons and
reports speak per driver, phrased with the lead's own values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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
    recency_feature,
)

LANGUAGES: tuple[str, ...] = ("en", "fr")

# event type -> language -> (did it, never did it, driver title)
EVENT_PHRASES: dict[str, dict[str, tuple[str, str, str]]] = {
    "page_view": {
        "en": ("Viewed website pages", "Never viewed a website page", "Website page views"),
        "fr": ("A consulté des pages du site", "N'a jamais consulté le site", "Pages du site consultées"),
    },
    "pricing_page_view": {
        "en": ("Visited the pricing page", "Never visited the pricing page", "Pricing page visits"),
        "fr": ("A visité la page tarifs", "N'a jamais visité la page tarifs", "Visites de la page tarifs"),
    },
    "email_open": {
        "en": ("Opened our emails", "Never opened an email", "Email opens"),
        "fr": ("A ouvert nos emails", "N'a jamais ouvert d'email", "Emails ouverts"),
    },
    "email_click": {
        "en": ("Clicked in our emails", "Never clicked in an email", "Email clicks"),
        "fr": ("A cliqué dans nos emails", "N'a jamais cliqué dans un email", "Clics dans les emails"),
    },
    "whitepaper_download": {
        "en": ("Downloaded a white paper", "Never downloaded a white paper", "White paper downloads"),
        "fr": ("A téléchargé un livre blanc", "N'a jamais téléchargé de livre blanc", "Livres blancs téléchargés"),
    },
    "webinar_registration": {
        "en": ("Registered for a webinar", "Never registered for a webinar", "Webinar registrations"),
        "fr": ("S'est inscrit à un webinaire", "Ne s'est jamais inscrit à un webinaire", "Inscriptions aux webinaires"),
    },
    "webinar_attended": {
        "en": ("Attended a webinar", "Never attended a webinar", "Webinars attended"),
        "fr": ("A assisté à un webinaire", "N'a jamais assisté à un webinaire", "Webinaires suivis"),
    },
    "form_submit": {
        "en": ("Filled in a form", "Never filled in a form", "Forms submitted"),
        "fr": ("A rempli un formulaire", "N'a jamais rempli de formulaire", "Formulaires remplis"),
    },
    "demo_request": {
        "en": ("Requested a demo", "Never requested a demo", "Demo requests"),
        "fr": ("A demandé une démo", "N'a jamais demandé de démo", "Demandes de démo"),
    },
    "meeting_booked": {
        "en": ("Booked a meeting", "Never booked a meeting", "Meetings booked"),
        "fr": ("A pris rendez-vous", "N'a jamais pris rendez-vous", "Rendez-vous pris"),
    },
    "unsubscribe": {
        "en": ("Unsubscribed", "Never unsubscribed", "Unsubscribes"),
        "fr": ("S'est désabonné", "Ne s'est jamais désabonné", "Désabonnements"),
    },
    "email_bounce": {
        "en": ("Emails to this lead bounced", "No email bounced", "Email bounces"),
        "fr": ("Les emails à ce contact ont rebondi", "Aucun email n'a rebondi", "Emails rejetés"),
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

_EMAIL_KIND_WORDS: dict[str, dict[str, str]] = {
    "corporate": {"en": "company domain", "fr": "domaine d'entreprise"},
    "free": {"en": "free webmail", "fr": "messagerie gratuite"},
    "disposable": {"en": "disposable address", "fr": "adresse jetable"},
    "invalid": {"en": "invalid address", "fr": "adresse invalide"},
}


def driver_of(feature: str, spec: FeatureSpec) -> str:
    """The business driver a feature belongs to (an event type, an attribute, or a summary)."""
    for event_type in spec.interaction_types:
        names = {count_feature(event_type, w) for w in spec.windows_days}
        names |= {count_feature(event_type, None), recency_feature(event_type)}
        if feature in names:
            return event_type
    summary = {
        ENGAGEMENT_DECAYED: "engagement",
        ACTIVE_DAYS_30D: "activity_days",
        ACTIVE_DAYS_TOTAL: "activity_days",
        EVENTS_TOTAL: "volume",
        OTHER_EVENTS_TOTAL: "volume",
        LEAD_AGE_DAYS: "lead_age",
    }
    return summary.get(feature, feature)


def driver_title(driver: str, language: str = "en") -> str:
    """A short title for a driver ("Pricing page visits")."""
    _check_language(language)
    if driver in EVENT_PHRASES:
        return EVENT_PHRASES[driver][language][2]
    if driver in _OTHER_DRIVERS:
        return _OTHER_DRIVERS[driver][language]
    if driver in ATTRIBUTE_TITLES:
        return ATTRIBUTE_TITLES[driver][language]
    return driver.replace("_", " ").capitalize()


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {list(LANGUAGES)}, got {language!r}")


def _times(n: int, language: str) -> str:
    if language == "fr":
        return f"{n} fois"
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _days_ago(days: float, language: str) -> str:
    d = int(math.floor(days))
    if language == "fr":
        return "aujourd'hui" if d == 0 else ("hier" if d == 1 else f"il y a {d} jours")
    return "today" if d == 0 else ("yesterday" if d == 1 else f"{d} days ago")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def describe_driver(
    driver: str, values: Mapping[str, object], spec: FeatureSpec, language: str = "en"
) -> tuple[str, object]:
    """Phrase a driver with one lead's values.

    Args:
        driver: From `driver_of`.
        values: The lead's feature values (name -> value).
        spec: Feature specification (windows).
        language: "en" or "fr".

    Returns:
        (label, the value shown): e.g. ("Visited the pricing page 3 times in the last 7 days", 3).
    """
    _check_language(language)
    if driver in EVENT_PHRASES:
        did, never, _ = EVENT_PHRASES[driver][language]
        total = int(values[count_feature(driver, None)])  # type: ignore[arg-type]
        if total == 0:
            return never, 0
        days = float(values[recency_feature(driver)])  # type: ignore[arg-type]
        if total == 1:
            return f"{did} {_days_ago(days, language)}", 1
        for window in spec.windows_days:
            n = int(values[count_feature(driver, window)])  # type: ignore[arg-type]
            if n > 0:
                span = f"au cours des {window} derniers jours" if language == "fr" else f"in the last {window} days"
                return f"{did} {_times(n, language)} {span}", n
        last = "dernière fois" if language == "fr" else "last time"
        return f"{did} {_times(total, language)}, {last} {_days_ago(days, language)}", total
    if driver == "engagement":
        x = float(values[ENGAGEMENT_DECAYED])  # type: ignore[arg-type]
        word = ("Score d'engagement récent" if language == "fr" else "Recent engagement score")
        return f"{word} {x:.1f}", round(x, 2)
    if driver == "activity_days":
        n = int(values[ACTIVE_DAYS_30D])  # type: ignore[arg-type]
        if language == "fr":
            return f"Actif {n} jour(s) sur les 30 derniers", n
        return f"Active on {n} day{'s' if n != 1 else ''} in the last 30 days", n
    if driver == "volume":
        n = int(values[EVENTS_TOTAL])  # type: ignore[arg-type]
        return (f"{n} interactions au total" if language == "fr" else f"{n} interactions in total"), n
    if driver == "lead_age":
        d = int(float(values[LEAD_AGE_DAYS]))  # type: ignore[arg-type]
        return (f"Lead créé il y a {d} jours" if language == "fr" else f"Lead created {d} days ago"), d
    value = values.get(driver)
    title = driver_title(driver, language)
    if _missing(value):
        return (f"{title} : inconnu" if language == "fr" else f"{title} unknown"), None
    if driver == EMAIL_DOMAIN_KIND:
        word = _EMAIL_KIND_WORDS.get(str(value), {}).get(language, str(value))
        return (f"{title} : {word}" if language == "fr" else f"{title}: {word}"), value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    shown = str(value).replace("-", "–") if driver == "company_size" else str(value).replace("_", " ")
    return (f"{title} : {shown}" if language == "fr" else f"{title} {shown}"), value
