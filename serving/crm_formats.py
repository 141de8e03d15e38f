"""What HubSpot and Salesforce send and expect, read and written without I/O.

Two CRMs call the service in their own formats (`serving.crm` answers them):

- **HubSpot workflow custom actions** POST JSON, `{callbackId, origin{portalId, ...}, context{source,
  workflowId}, object{objectId, objectType, properties}, inputFields}`, signed with
  `X-HubSpot-Signature-v3`: base64 of the HMAC-SHA256, keyed with the app's client secret, of
  method + URI + body + `X-HubSpot-Request-Timestamp` (milliseconds since 1970), where the URI is
  the one HubSpot called with some percent-escapes decoded (`HUBSPOT_DECODED_ESCAPES`). A timestamp
  more than 5 minutes old is refused, as HubSpot's guide says. The answer is
  `{"outputFields": {...}}`. HubSpot retries a 5xx or a 429 for days and never a 4xx: every
  client mistake here is a 4xx naming the field.
- **Salesforce outbound messages** POST a SOAP 1.1 envelope whose body is
  `<notifications xmlns="http://soap.sforce.com/2005/09/outbound">` with `OrganizationId`,
  `ActionId`, ..., and 1 to 100 `<Notification><Id/><sObject xsi:type="sf:Lead">` whose fields are
  in `urn:sobject.enterprise.soap.sforce.com`. The answer is `<notificationsResponse><Ack>true</Ack>`;
  anything else makes Salesforce send the message again, for up to 24 hours. The message is read
  with defusedxml, without a DTD (SOAP forbids one), so entities cannot expand.

Field maps (`CrmConfig`) rename the CRM's property names to the lead attributes the model reads
(feature names or the export's own columns); a property not in a configured map is refused,
naming it. Where a problem is, is told as a path in the CRM's message: `["object", "properties",
"numemployees"]` for HubSpot, `["Notification", 3, "sObject", "NumberOfEmployees"]` for Salesforce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError

from model.scoring import LeadIn

Location = tuple[str | int, ...]

# -- HubSpot ------------------------------------------------------------------------------------

HUBSPOT_SIGNATURE_HEADER = "x-hubspot-signature-v3"
HUBSPOT_TIMESTAMP_HEADER = "x-hubspot-request-timestamp"
HUBSPOT_MAX_AGE_MS = 5 * 60 * 1000
# HubSpot signs the URI with these escapes decoded (its request-validation guide, v3).
HUBSPOT_DECODED_ESCAPES = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_ESCAPE = re.compile("|".join(HUBSPOT_DECODED_ESCAPES), re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]{1,16}")


@dataclass(frozen=True)
class SignatureRefused:
    """Why a request is not taken as HubSpot's: `kind` for clients, `reason` for people."""

    kind: str
    reason: str


def hubspot_uri(base: str, raw_path: str, query: str) -> str:
    """The URI HubSpot signs: scheme and host, path and query, with `HUBSPOT_DECODED_ESCAPES` decoded.

    Args:
        base: `https://host[:port]` as HubSpot calls the service.
        raw_path: The path as sent (percent-escapes kept).
        query: The query string as sent, without `?`; empty for none.
    """
    uri = base + raw_path + (f"?{query}" if query else "")
    return _ESCAPE.sub(lambda m: HUBSPOT_DECODED_ESCAPES[m.group(0).upper()], uri)


def hubspot_signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """`X-HubSpot-Signature-v3` of a request: base64(HMAC-SHA256(secret, method + uri + body + timestamp))."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_hubspot_v3(
    secret: str,
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    now: datetime,
) -> SignatureRefused | None:
    """None when the request carries HubSpot's v3 signature of itself, made less than 5 minutes ago.

    A timestamp more than 5 minutes ahead of `now` is refused too: it would make a replay valid
    for longer. The signatures are compared in constant time.

    Args:
        secret: The app's client secret.
        method, uri, body: The request (`uri` from `hubspot_uri`).
        headers: Its headers, names in lower case.
        now: The time to measure the timestamp's age against.
    """
    signature = headers.get(HUBSPOT_SIGNATURE_HEADER)
    stamp = headers.get(HUBSPOT_TIMESTAMP_HEADER)
    if not signature:
        return SignatureRefused("missing_signature", "send HubSpot's X-HubSpot-Signature-v3 header")
    if not stamp:
        return SignatureRefused("missing_timestamp", "send HubSpot's X-HubSpot-Request-Timestamp header")
    if not _DIGITS.fullmatch(stamp):
        return SignatureRefused("invalid_timestamp", "X-HubSpot-Request-Timestamp is not milliseconds since 1970")
    age_ms = now.timestamp() * 1000 - int(stamp)
    if age_ms > HUBSPOT_MAX_AGE_MS:
        return SignatureRefused("stale_timestamp", f"the request was signed {age_ms / 60000:.0f} minutes ago, over 5: a replay, or a slow clock")
    if age_ms < -HUBSPOT_MAX_AGE_MS:
        return SignatureRefused("future_timestamp", f"the request is signed {-age_ms / 60000:.0f} minutes in the future: a clock is wrong")
    expected = hubspot_signature_v3(secret, method, uri, body, stamp)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return SignatureRefused(
            "invalid_signature",
            "X-HubSpot-Signature-v3 does not match: another app secret (LEADSCORE_HUBSPOT_APP_SECRET), a body changed on "
            "the way, or another URL than the one HubSpot called (LEADSCORE_PUBLIC_URL)",
        )
    return None


def _a_whole_number(value: object) -> object:
    # HubSpot's ids are JSON numbers; one written as text is taken, a fraction or a boolean is not.
    if isinstance(value, bool) or (isinstance(value, str) and not _DIGITS.fullmatch(value.strip())):
        raise ValueError("must be a whole number")
    return value


HubSpotId = Annotated[int, Field(ge=0), BeforeValidator(_a_whole_number)]
PropertyValue = str | int | float | bool | None


class HubSpotOrigin(BaseModel):
    """Where the call comes from; HubSpot's other keys are kept as sent."""

    model_config = ConfigDict(extra="allow")

    portalId: HubSpotId


class HubSpotObject(BaseModel):
    """The record the workflow runs on, with the properties the action definition asks for."""

    model_config = ConfigDict(extra="allow")

    objectId: HubSpotId
    objectType: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    properties: dict[str, PropertyValue] = Field(default_factory=dict)


class HubSpotActionRequest(BaseModel):
    """Body of a HubSpot workflow custom action's request (keys HubSpot may add are kept, not refused)."""

    model_config = ConfigDict(extra="allow", title="HubSpotActionRequest", hide_input_in_errors=True)

    callbackId: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    origin: HubSpotOrigin
    context: dict[str, Any] | None = None
    object: HubSpotObject
    inputFields: dict[str, Any] = Field(default_factory=dict)


class HubSpotMap(BaseModel):
    """How a HubSpot record becomes a lead.

    Attributes:
        properties: HubSpot property -> lead attribute (a feature name, or a column of the export
            the model was trained on). Empty: every property is sent under its own name (right
            for a model trained on a HubSpot export). Not empty: a property neither mapped nor
            `ignored` is refused, naming it.
        created_at: The property holding the record's creation time (ISO 8601, or milliseconds
            since 1970 as HubSpot writes them).
        ignored: Properties taken and not scored.
    """

    model_config = ConfigDict(extra="forbid")

    properties: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    created_at: Annotated[str, Field(min_length=1)] = "createdate"
    ignored: list[str] = Field(default_factory=lambda: ["hs_object_id", "lastmodifieddate"])


class SalesforceMap(BaseModel):
    """How a Salesforce record of an outbound message becomes a lead.

    Attributes:
        fields: Salesforce field -> lead attribute, as `HubSpotMap.properties`.
        created_at: The field holding the creation time (ISO 8601).
        ignored: Fields taken and not scored (`Id` is the lead id, always taken).
        object_types: The `xsi:type` of sObjects taken (without the `sf:` prefix).
    """

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    created_at: Annotated[str, Field(min_length=1)] = "CreatedDate"
    ignored: list[str] = Field(default_factory=lambda: ["LastModifiedDate", "SystemModstamp"])
    object_types: list[str] = Field(default_factory=lambda: ["Lead"], min_length=1)


class CrmConfig(BaseModel):
    """The CRM endpoints' field maps (the YAML file `LEADSCORE_CRM_CONFIG` names)."""

    model_config = ConfigDict(extra="forbid")

    hubspot: HubSpotMap = Field(default_factory=HubSpotMap)
    salesforce: SalesforceMap = Field(default_factory=SalesforceMap)


@dataclass(frozen=True)
class CrmLead:
    """A lead read from a CRM's record, and where each of its fields came from in the message.

    Attributes:
        lead: The validated lead (no interactions: the CRM sends none).
        where: Lead field ("lead_id", "created_at", "attributes.<name>") -> its location in the
            CRM's message, to name a problem scoring finds.
    """

    lead: LeadIn
    where: Mapping[str, Location]

    def location(self, field: str) -> Location:
        """Where a lead field (as `LeadRejected.field` names it) is in the CRM's message."""
        return _located(self.where, field)


def _located(where: Mapping[str, Location], field: str) -> Location:
    # The field's own place, else the record's (the lead id's parent): never nowhere.
    return where.get(field, where["lead_id"][:-1])


class CrmRejected(ValueError):
    """A CRM message that cannot be taken: each problem with its location in the message."""

    def __init__(self, problems: list[tuple[Location, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))


def _mapped(
    values: Mapping[str, PropertyValue], names: Mapping[str, str], ignored: list[str], at: Location, what: str
) -> tuple[dict[str, PropertyValue], dict[str, Location], list[tuple[Location, str]]]:
    """CRM fields renamed to lead attributes; with a map configured, an unmapped field is a problem."""
    attributes: dict[str, PropertyValue] = {}
    where: dict[str, Location] = {}
    problems: list[tuple[Location, str]] = []
    skipped = set(ignored)
    for name, value in values.items():
        if name in skipped:
            continue
        if names and name not in names:
            problems.append((
                (*at, name),
                f"unknown {what}: not in the CRM config's map ({', '.join(sorted(names))}); map it to a lead attribute, "
                "or list it as ignored",
            ))  # fmt: skip
            continue
        attribute = names.get(name, name)
        if attribute in attributes:
            problems.append(((*at, name), f"gives the lead attribute {attribute!r} again; map one {what} to it"))
            continue
        attributes[attribute] = value
        where[f"attributes.{attribute}"] = (*at, name)
    return attributes, where, problems


def _validated_lead(
    lead_id: str, created_at: object, attributes: dict[str, PropertyValue], where: dict[str, Location]
) -> CrmLead:
    """The lead as `LeadIn` validates it; its errors located in the CRM's message."""
    try:
        lead = LeadIn.model_validate({"lead_id": lead_id, "created_at": created_at, "attributes": attributes})
    except ValidationError as exc:
        problems = [
            (_located(where, ".".join(str(part) for part in error["loc"][:2])), error["msg"])
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise CrmRejected(problems) from None
    return CrmLead(lead, where)


def _hubspot_time(value: PropertyValue) -> object:
    # HubSpot writes datetimes as milliseconds since 1970 in many places, ISO 8601 in others.
    millis = (isinstance(value, str) and _DIGITS.fullmatch(value.strip()) is not None) or (
        isinstance(value, int) and not isinstance(value, bool)
    )
    if millis:
        assert isinstance(value, (str, int))
        try:
            return datetime.fromtimestamp(int(value) / 1000, UTC).isoformat()
        except (OverflowError, ValueError, OSError):
            return value  # refused by LeadIn as a number
    return value


def hubspot_lead(request: HubSpotActionRequest, config: HubSpotMap) -> CrmLead:
    """The lead a HubSpot custom action's record is: `objectId` its id, properties mapped by `config`.

    Raises:
        CrmRejected: The creation time is missing or unreadable, a property is unknown to a
            configured map, or an attribute is given twice or cannot be read.
    """
    at: Location = ("object", "properties")
    properties = dict(request.object.properties)
    created_raw = properties.pop(config.created_at, None)
    attributes, where, problems = _mapped(properties, config.properties, config.ignored, at, "HubSpot property")
    where["lead_id"] = ("object", "objectId")
    where["created_at"] = (*at, config.created_at)
    if created_raw is None or created_raw == "":
        problems.insert(0, ((*at, config.created_at), "required: the record's creation time (hubspot.created_at in the CRM config names the property)"))
    if problems:
        raise CrmRejected(problems)
    return _validated_lead(str(request.object.objectId), _hubspot_time(created_raw), attributes, where)


class HubSpotOutputFields(BaseModel):
    """The custom action's outputs, which later steps of the workflow read (e.g. to set a property)."""

    probability: float = Field(description="Calibrated probability to convert within the horizon.")
    score: int = Field(description="0-100: the percentile of the probability among the validation leads.")
    tier: str = Field(description="hot, warm or cold.")
    top_reason: str | None = Field(description="The strongest reason up, in words; null when nothing lifts the score.")
    model_version: str


class HubSpotActionOut(BaseModel):
    """What a custom action answers HubSpot."""

    outputFields: HubSpotOutputFields


def hubspot_output(probability: float, score: int, tier: str, top_reason: str | None, model_version: str) -> HubSpotActionOut:
    """The body a custom action answers: its output fields."""
    return HubSpotActionOut(
        outputFields=HubSpotOutputFields(
            probability=probability, score=score, tier=tier, top_reason=top_reason, model_version=model_version
        )
    )


# -- Salesforce ---------------------------------------------------------------------------------

SOAP_ENVELOPE_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100
XML_MEDIA_TYPES = ("text/xml", "application/xml", "application/soap+xml")
_SALESFORCE_ID = re.compile(r"[A-Za-z0-9]{15}([A-Za-z0-9]{3})?")


@dataclass(frozen=True)
class SalesforceNotification:
    """One notification of an outbound message.

    Attributes:
        index: Its position in the message (0-based), for locations.
        id: The notification's Id, the same when Salesforce sends it again.
        object_type: The sObject's `xsi:type` without its prefix, e.g. "Lead".
        fields: Field -> text, None for `xsi:nil`.
    """

    index: int
    id: str
    object_type: str
    fields: dict[str, str | None]


@dataclass(frozen=True)
class OutboundMessage:
    """A Salesforce outbound message: who sent it, and its notifications in order."""

    organization_id: str
    action_id: str
    notifications: list[SalesforceNotification]


def _local(tag: str) -> tuple[str, str]:
    namespace, _, name = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return namespace, name


def _shown(element: Element) -> str:
    namespace, name = _local(element.tag)
    return f'<{name} xmlns="{namespace}">' if namespace else f"<{name}>"


def _child(parent: Element, namespace: str, name: str) -> Element | None:
    return parent.find(f"{{{namespace}}}{name}")


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def parse_outbound_message(body: bytes) -> OutboundMessage:
    """Read a Salesforce outbound message (SOAP 1.1), refusing any DTD or entity.

    Raises:
        CrmRejected: Not well-formed XML, a DTD or entity, no SOAP envelope, a body that is not
            a `notifications` of the outbound namespace, a missing or malformed `OrganizationId`,
            notification `Id` or sObject, or more than 100 notifications; every problem found.
    """
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CrmRejected([(("body",), f"refused: {exc.__class__.__name__} (a SOAP message has no DTD or entities)")]) from None
    except ParseError as exc:
        raise CrmRejected([(("body",), f"not well-formed XML: {exc}")]) from None
    if root.tag != f"{{{SOAP_ENVELOPE_NS}}}Envelope":
        raise CrmRejected([(("Envelope",), f'expected a SOAP 1.1 <Envelope xmlns="{SOAP_ENVELOPE_NS}">, got {_shown(root)}')])
    soap_body = _child(root, SOAP_ENVELOPE_NS, "Body")
    if soap_body is None:
        raise CrmRejected([(("Envelope", "Body"), "missing")])
    notifications = _child(soap_body, OUTBOUND_NS, "notifications")
    if notifications is None:
        found = ", ".join(_shown(e) for e in soap_body) or "nothing"
        raise CrmRejected([(("Body", "notifications"), f'expected <notifications xmlns="{OUTBOUND_NS}">, got {found}')])
    problems: list[tuple[Location, str]] = []
    organization_id = _text(_child(notifications, OUTBOUND_NS, "OrganizationId"))
    if not _SALESFORCE_ID.fullmatch(organization_id):
        problems.append((("OrganizationId",), "missing, or not a Salesforce id (15 or 18 letters and digits)"))
    action_id = _text(_child(notifications, OUTBOUND_NS, "ActionId"))
    elements = notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
    if not elements:
        problems.append((("Notification",), "no notification in the message"))
    if len(elements) > MAX_NOTIFICATIONS:
        problems.append((("Notification",), f"{len(elements)} notifications, at most {MAX_NOTIFICATIONS} in one message"))
    read: list[SalesforceNotification] = []
    seen: dict[str, int] = {}
    for i, element in enumerate(elements[:MAX_NOTIFICATIONS]):
        notification = _notification(i, element, problems)
        if notification is None:
            continue
        if notification.id in seen:
            problems.append((("Notification", i, "Id"), f"the same as notification {seen[notification.id]}'s"))
            continue
        seen[notification.id] = i
        read.append(notification)
    if problems:
        raise CrmRejected(problems)
    return OutboundMessage(organization_id, action_id, read)


def _notification(i: int, element: Element, problems: list[tuple[Location, str]]) -> SalesforceNotification | None:
    at: Location = ("Notification", i)
    notification_id = _text(_child(element, OUTBOUND_NS, "Id"))
    sobject = _child(element, OUTBOUND_NS, "sObject")
    count = len(problems)
    if not _SALESFORCE_ID.fullmatch(notification_id):
        problems.append(((*at, "Id"), "missing, or not a Salesforce id (15 or 18 letters and digits)"))
    if sobject is None:
        problems.append(((*at, "sObject"), "missing"))
        return None
    declared = sobject.get(f"{{{XSI_NS}}}type", "")
    object_type = declared.rpartition(":")[2]
    if not object_type:
        problems.append(((*at, "sObject"), 'no xsi:type (e.g. xsi:type="sf:Lead")'))
    fields: dict[str, str | None] = {}
    for field in sobject:
        namespace, name = _local(field.tag)
        if namespace != SOBJECT_NS:
            problems.append(((*at, "sObject", name), f'a field outside xmlns="{SOBJECT_NS}"'))
            continue
        if len(field):
            problems.append(((*at, "sObject", name), "holds elements, not a value"))
            continue
        fields[name] = None if field.get(f"{{{XSI_NS}}}nil") == "true" else (field.text or "")
    if len(problems) > count:
        return None
    return SalesforceNotification(i, notification_id, object_type, fields)


def salesforce_lead(notification: SalesforceNotification, config: SalesforceMap) -> CrmLead:
    """The lead a notification's sObject is: its `Id` the lead id, fields mapped by `config`.

    Raises:
        CrmRejected: Another object type than `config.object_types`, no `Id` or creation time,
            a field unknown to a configured map, an attribute given twice or unreadable.
    """
    at: Location = ("Notification", notification.index, "sObject")
    if notification.object_type not in config.object_types:
        raise CrmRejected([(at, f"xsi:type {notification.object_type!r}: this endpoint takes {', '.join(config.object_types)}")])
    fields = dict(notification.fields)
    lead_id = fields.pop("Id", None)
    created_raw = fields.pop(config.created_at, None)
    attributes, where, problems = _mapped(fields, config.fields, [*config.ignored, "Id"], at, "Salesforce field")
    where["lead_id"] = (*at, "Id")
    where["created_at"] = (*at, config.created_at)
    if not lead_id or not _SALESFORCE_ID.fullmatch(lead_id.strip()):
        problems.insert(0, ((*at, "Id"), "missing, or not a Salesforce id: add the Id field to the outbound message"))
    if not created_raw:
        problems.insert(0, ((*at, config.created_at), "required: add the creation time to the outbound message's fields"))
    if problems:
        raise CrmRejected(problems)
    assert lead_id is not None
    return _validated_lead(lead_id.strip(), created_raw, attributes, where)


def _envelope(content: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENVELOPE_NS}"><soapenv:Body>{content}</soapenv:Body></soapenv:Envelope>'
    ).encode()


def salesforce_ack() -> bytes:
    """The answer that tells Salesforce the message is delivered: `<Ack>true</Ack>`."""
    return _envelope(f'<notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>')


def soap_fault(problems: list[tuple[Location, str]], code: str = "Client") -> bytes:
    """A SOAP 1.1 fault naming each problem (Salesforce shows the text in its delivery status)."""
    text = "; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems)
    return _envelope(f"<soapenv:Fault><faultcode>soapenv:{code}</faultcode><faultstring>{escape(text)}</faultstring></soapenv:Fault>")
