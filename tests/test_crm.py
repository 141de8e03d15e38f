"""The CRM-native endpoints: HubSpot workflow custom actions and Salesforce outbound messages.

Code tests of the pure readers (`serving.crm_formats`), then the service's ASGI app, then the
real server over HTTP. Payloads are shaped as the CRMs' documentation shows them: HubSpot's
custom action request (`callbackId`, `origin`, `context`, `object`, `inputFields`, with the
properties `objectRequestOptions` asks for) and Salesforce's outbound message envelope
(`notifications` of `http://soap.sforce.com/2005/09/outbound`, `sObject xsi:type="sf:Lead"`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from model.bundle import read_meta
from serving.crm import read_crm_config
from serving.crm_formats import (
    CrmConfig,
    CrmRejected,
    HubSpotActionRequest,
    hubspot_lead,
    hubspot_signature_v3,
    hubspot_uri,
    parse_outbound_message,
    salesforce_ack,
    salesforce_lead,
    verify_hubspot_v3,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CRM_CONFIG = PROJECT_ROOT / "examples" / "crm.yaml"
SECRET = "hubspot-app-secret-0123456789"
ORG_ID = "00Dxx0000001gEREAY"
SF_TOKEN = "salesforce-url-token-0123456789"
BASE = "http://leadscore.test"
HUBSPOT_URL = f"{BASE}/crm/hubspot/action"
CREATED = "2024-03-01T10:00:00.000Z"


def hubspot_body(object_id: int = 614, **properties: Any) -> dict[str, Any]:
    """A custom action request as HubSpot's reference shows it, with the record's properties."""
    props = {
        "email": "jane.doe@acme-robotics.com", "industry": "software", "company_size": "50-199", "numemployees": "120",
        "country": "FR", "jobtitle": "marketing", "hs_seniority": "director", "hs_analytics_source": "referral",
        "hs_marketable_status": "yes", "createdate": CREATED, "hs_object_id": str(object_id),
    }  # fmt: skip
    props.update(properties)
    return {
        "callbackId": "ap-102670506-56777914962-11-0",
        "origin": {"portalId": 102670506, "actionDefinitionId": 10860211, "actionDefinitionVersion": 1,
                   "extensionDefinitionId": 10860211, "extensionDefinitionVersionId": 1},
        "context": {"source": "WORKFLOWS", "workflowId": 192814114},
        "object": {"objectId": object_id, "objectType": "CONTACT", "properties": {k: v for k, v in props.items() if v is not None}},
        "inputFields": {},
    }  # fmt: skip


def signed(body: bytes, url: str = HUBSPOT_URL, secret: str = SECRET, at: datetime | None = None) -> dict[str, str]:
    """HubSpot's v3 headers for a POST of `body` to `url`, written out as its guide says."""
    stamp = str(int((at or datetime.now(UTC)).timestamp() * 1000))
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": hubspot_signature_v3(secret, "POST", url, body, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
    }


LEAD_FIELDS = """
     <sf:Id>{lead_id}</sf:Id>
     <sf:Company>Acme Robotics</sf:Company>
     <sf:Country>FR</sf:Country>
     <sf:CreatedDate>{created}</sf:CreatedDate>
     <sf:Email>jane.doe@acme-robotics.com</sf:Email>
     <sf:FirstName>Jane</sf:FirstName>
     <sf:Industry>software</sf:Industry>
     <sf:Company_Size__c>50-199</sf:Company_Size__c>
     <sf:LastName>Doe</sf:LastName>
     <sf:LeadSource>referral</sf:LeadSource>
     <sf:Marketing_Consent__c>yes</sf:Marketing_Consent__c>
     <sf:NumberOfEmployees>{employees}</sf:NumberOfEmployees>
     <sf:Seniority__c xsi:nil="true"/>
     <sf:Title>marketing</sf:Title>"""


def notification(notification_id: str, lead_id: str, employees: str = "120", extra: str = "", object_type: str = "sf:Lead") -> str:
    fields = LEAD_FIELDS.format(lead_id=lead_id, created=CREATED, employees=employees) + extra
    return f"""
   <Notification>
    <Id>{notification_id}</Id>
    <sObject xsi:type="{object_type}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{fields}
    </sObject>
   </Notification>"""


def outbound_message(*notifications: str, org_id: str = ORG_ID, namespace: str = "http://soap.sforce.com/2005/09/outbound") -> bytes:
    """An outbound message as Salesforce sends it (its WSDL's `notifications`, in a SOAP 1.1 envelope)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="{namespace}">
   <OrganizationId>{org_id}</OrganizationId>
   <ActionId>04kxx0000000007EAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/61.0/00Dxx0000001gER</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/61.0/00Dxx0000001gER</PartnerUrl>{"".join(notifications)}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>""".encode()


def nid(i: int) -> str:
    return f"04lxx{i:010d}EAA"


def lid(i: int) -> str:
    return f"00Qxx{i:010d}EAA"


# -- the readers, without a service ---------------------------------------------------------------


def test_hubspot_signature_is_hmac_sha256_of_method_uri_body_timestamp_in_base64() -> None:
    import base64
    import hashlib
    import hmac

    body = b'{"a": 1}'
    expected = base64.b64encode(hmac.new(SECRET.encode(), b"POST" + HUBSPOT_URL.encode() + body + b"1700000000000", hashlib.sha256).digest())

    assert hubspot_signature_v3(SECRET, "POST", HUBSPOT_URL, body, "1700000000000") == expected.decode()


def test_hubspot_uri_decodes_the_escapes_hubspot_decodes_and_keeps_others() -> None:
    uri = hubspot_uri("https://scores.example.com", "/crm/hubspot/action", "portal=1%3A2%2C3&x=%20y%26")

    assert uri == "https://scores.example.com/crm/hubspot/action?portal=1:2,3&x=%20y%26"


NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        pytest.param({}, None, id="good"),
        pytest.param({"at": NOW - timedelta(minutes=4)}, None, id="four-minutes-old"),
        pytest.param({"at": NOW - timedelta(minutes=6)}, "stale_timestamp", id="six-minutes-old"),
        pytest.param({"at": NOW + timedelta(minutes=6)}, "future_timestamp", id="six-minutes-ahead"),
        pytest.param({"secret": "another-secret-0123456789"}, "invalid_signature", id="other-secret"),
        pytest.param({"url": "http://elsewhere.test/crm/hubspot/action"}, "invalid_signature", id="other-url"),
        pytest.param({"body": b'{"a": 2}'}, "invalid_signature", id="body-changed"),
        pytest.param({"drop": "X-HubSpot-Signature-v3"}, "missing_signature", id="no-signature"),
        pytest.param({"drop": "X-HubSpot-Request-Timestamp"}, "missing_timestamp", id="no-timestamp"),
        pytest.param({"stamp": "2025-06-01T12:00:00Z"}, "invalid_timestamp", id="timestamp-not-millis"),
    ],
)
def test_hubspot_signature_check(change: dict[str, Any], kind: str | None) -> None:
    body = b'{"a": 1}'
    headers = {k.lower(): v for k, v in signed(body, change.get("url", HUBSPOT_URL), change.get("secret", SECRET), change.get("at", NOW)).items()}
    if "drop" in change:
        del headers[change["drop"].lower()]
    if "stamp" in change:
        headers["x-hubspot-request-timestamp"] = change["stamp"]

    refused = verify_hubspot_v3(SECRET, "POST", HUBSPOT_URL, change.get("body", body), headers, NOW)

    assert (refused.kind if refused else None) == kind


def test_hubspot_record_becomes_a_lead_through_the_property_map() -> None:
    request = HubSpotActionRequest.model_validate(hubspot_body(createdate="1709287200000"))

    crm_lead = hubspot_lead(request, read_crm_config(CRM_CONFIG).hubspot)

    assert crm_lead.lead.lead_id == "614"
    assert crm_lead.lead.created_at == datetime(2024, 3, 1, 10, tzinfo=UTC)  # milliseconds, as HubSpot writes them
    assert crm_lead.lead.attributes["job_role"] == "marketing" and crm_lead.lead.attributes["employee_count"] == "120"
    assert "hs_object_id" not in crm_lead.lead.attributes  # ignored
    assert crm_lead.location("attributes.employee_count") == ("object", "properties", "numemployees")


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        pytest.param(hubspot_body(favourite_colour="blue"), ("object", "properties", "favourite_colour"), "unknown HubSpot property", id="unknown-property"),
        pytest.param(hubspot_body(createdate=None), ("object", "properties", "createdate"), "required", id="no-createdate"),
        pytest.param(hubspot_body(createdate="last tuesday"), ("object", "properties", "createdate"), "datetime", id="bad-createdate"),
    ],
)  # fmt: skip
def test_hubspot_record_refused_naming_the_property(body: dict[str, Any], loc: tuple[str, ...], message: str) -> None:
    with pytest.raises(CrmRejected) as caught:
        hubspot_lead(HubSpotActionRequest.model_validate(body), read_crm_config(CRM_CONFIG).hubspot)

    assert any(where == loc and message in msg for where, msg in caught.value.problems), caught.value.problems


def test_without_a_map_hubspot_properties_keep_their_names() -> None:
    crm_lead = hubspot_lead(HubSpotActionRequest.model_validate(hubspot_body(favourite_colour="blue")), CrmConfig().hubspot)

    assert crm_lead.lead.attributes["favourite_colour"] == "blue" and crm_lead.lead.attributes["jobtitle"] == "marketing"


def test_outbound_message_as_documented_is_read() -> None:
    message = parse_outbound_message(outbound_message(notification(nid(1), lid(1)), notification(nid(2), lid(2))))

    assert message.organization_id == ORG_ID
    assert [n.id for n in message.notifications] == [nid(1), nid(2)]
    first = message.notifications[0]
    assert first.object_type == "Lead" and first.fields["Title"] == "marketing" and first.fields["Seniority__c"] is None
    crm_lead = salesforce_lead(first, read_crm_config(CRM_CONFIG).salesforce)
    assert crm_lead.lead.lead_id == lid(1)
    assert crm_lead.lead.attributes["employee_count"] == "120" and crm_lead.lead.attributes["seniority"] is None
    assert crm_lead.location("attributes.employee_count") == ("Notification", 0, "sObject", "NumberOfEmployees")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>&lol3;</soapenv:Body></soapenv:Envelope>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>&xxe;</soapenv:Body></soapenv:Envelope>"""
BAD_MESSAGES = [
    pytest.param(b"<soapenv:Envelope", ("body",), "not well-formed XML", id="bad-xml"),
    pytest.param(b"", ("body",), "not well-formed XML", id="empty"),
    pytest.param(BILLION_LAUGHS, ("body",), "DTDForbidden", id="entity-expansion"),
    pytest.param(EXTERNAL_ENTITY, ("body",), "DTDForbidden", id="external-entity"),
    pytest.param(b"<notifications xmlns='http://soap.sforce.com/2005/09/outbound'/>", ("Envelope",), "SOAP 1.1", id="no-envelope"),
    pytest.param(outbound_message(notification(nid(1), lid(1)), namespace="http://soap.sforce.com/2005/09/inbound"),
                 ("Body", "notifications"), "expected <notifications", id="wrong-namespace"),
    pytest.param(outbound_message(notification("", lid(1))), ("Notification", 0, "Id"), "missing", id="missing-id"),
    pytest.param(outbound_message(notification(nid(1), lid(1)).replace("<Id>04l", "<Id>x-04l")), ("Notification", 0, "Id"),
                 "not a Salesforce id", id="malformed-id"),
    pytest.param(outbound_message(notification(nid(1), lid(1)), org_id=""), ("OrganizationId",), "missing", id="no-org-id"),
    pytest.param(outbound_message(), ("Notification",), "no notification", id="no-notification"),
    pytest.param(outbound_message(*(notification(nid(i), lid(i)) for i in range(101))), ("Notification",), "at most 100", id="101-notifications"),
    pytest.param(outbound_message(notification(nid(1), lid(1)), notification(nid(1), lid(2))), ("Notification", 1, "Id"),
                 "the same as notification 0", id="same-id-twice"),
    pytest.param(outbound_message(notification(nid(1), lid(1), extra="<Owner xmlns='urn:other'>x</Owner>")),
                 ("Notification", 0, "sObject", "Owner"), "outside", id="field-in-another-namespace"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "loc", "message"), BAD_MESSAGES)
def test_bad_outbound_message_is_refused_naming_the_element(body: bytes, loc: tuple[str | int, ...], message: str) -> None:
    with pytest.raises(CrmRejected) as caught:
        parse_outbound_message(body)

    assert any(where == loc and message in msg for where, msg in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("note", "loc", "message"),
    [
        pytest.param(notification(nid(1), lid(1), object_type="sf:Contact"), ("Notification", 0, "sObject"), "takes Lead", id="a-contact"),
        pytest.param(notification(nid(1), lid(1), extra="<sf:Rating>Hot</sf:Rating>"), ("Notification", 0, "sObject", "Rating"),
                     "unknown Salesforce field", id="unknown-field"),
        pytest.param(notification(nid(1), lid(1)).replace("<sf:Id>", "<sf:Idx>").replace("</sf:Id>", "</sf:Idx>"),
                     ("Notification", 0, "sObject", "Id"), "missing", id="no-lead-id"),
    ],
)  # fmt: skip
def test_notification_that_is_no_lead_is_refused_naming_it(note: str, loc: tuple[str | int, ...], message: str) -> None:
    first = parse_outbound_message(outbound_message(note)).notifications[0]

    with pytest.raises(CrmRejected) as caught:
        salesforce_lead(first, read_crm_config(CRM_CONFIG).salesforce)

    assert any(where == loc and message in msg for where, msg in caught.value.problems), caught.value.problems


def test_crm_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    from serving.crm import CrmConfigError

    path = tmp_path / "crm.yaml"
    path.write_text("hubspot:\n  propertys: {a: b}\n")

    with pytest.raises(CrmConfigError, match=r"crm.yaml .*hubspot.propertys"):
        read_crm_config(path)


# -- the ASGI app ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crm_env(trained_bundle: Path, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("crm")
    return {
        **service_env,
        "LEADSCORE_BUNDLE": str(trained_bundle),
        "LEADSCORE_HUBSPOT_APP_SECRET": SECRET,
        "LEADSCORE_SALESFORCE_ORG_IDS": ORG_ID[:15],  # the 15-character form matches the 18 Salesforce sends
        "LEADSCORE_SALESFORCE_TOKEN": SF_TOKEN,
        "LEADSCORE_CRM_CONFIG": str(CRM_CONFIG),
        "LEADSCORE_SCORE_LOG": str(workdir / "scores.jsonl"),
        "LEADSCORE_LEAD_STORE": f"sqlite:///{workdir / 'leads.db'}",
        "BENTOML_HOME": str(workdir / "bentoml"),
    }


@pytest.fixture(scope="module")
async def client(service_app, crm_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The service's ASGI app with the CRM secrets configured, called without an API key."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in crm_env.items():
            env.setenv(name, value)
        env.delenv("LEADSCORE_PUBLIC_URL", raising=False)
        async with (
            service_app.router.lifespan_context(service_app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=service_app), base_url=BASE) as http,
        ):
            yield http


async def post_hubspot(client: httpx.AsyncClient, body: dict[str, Any] | bytes, **sign: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/crm/hubspot/action", content=content, headers=signed(content, **sign))


async def post_salesforce(client: httpx.AsyncClient, body: bytes, token: str | None = SF_TOKEN, media_type: str = "text/xml; charset=utf-8") -> httpx.Response:
    params = {"token": token} if token is not None else {}
    return await client.post("/crm/salesforce/outbound", content=body, params=params, headers={"Content-Type": media_type, "SOAPAction": '""'})


@pytest.mark.anyio
async def test_hubspot_action_answers_output_fields_as_score_would(client: httpx.AsyncClient, crm_env: dict[str, str], service_keys) -> None:
    response = await post_hubspot(client, hubspot_body())

    assert response.status_code == 200, response.text
    fields = response.json()["outputFields"]
    assert set(fields) == {"probability", "score", "tier", "top_reason", "model_version"}
    assert fields["model_version"] == read_meta(Path(crm_env["LEADSCORE_BUNDLE"]))["model_version"]
    # The same lead sent to /score in the service's own shape, scored now too.
    lead = {"lead_id": "614", "created_at": CREATED, "attributes": {
        "email": "jane.doe@acme-robotics.com", "industry": "software", "company_size": "50-199", "employee_count": "120",
        "country": "FR", "job_role": "marketing", "seniority": "director", "source": "referral", "marketing_consent": "yes"}}  # fmt: skip
    single = (await client.post("/score", json={"lead": lead, "top_k": 1}, headers=service_keys.header("score"))).json()
    assert fields["probability"] == pytest.approx(single["probability"], abs=1e-3)
    assert fields["tier"] == single["tier"] and abs(fields["score"] - single["score"]) <= 1
    assert fields["top_reason"] == (single["reasons"]["up"][0]["label"] if single["reasons"]["up"] else None)


@pytest.mark.anyio
async def test_hubspot_action_is_recorded_in_the_score_log_by_hash(client: httpx.AsyncClient, crm_env: dict[str, str], service_keys) -> None:
    from model.scorelog import lead_pseudonym

    response = await post_hubspot(client, hubspot_body(object_id=90210))

    assert response.status_code == 200, response.text
    log = Path(crm_env["LEADSCORE_SCORE_LOG"]).read_text()
    assert lead_pseudonym("90210", service_keys.lead.encode()) in log
    assert "acme-robotics" not in log


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("sign", "kind"),
    [
        pytest.param({"secret": "another-secret-0123456789"}, "invalid_signature", id="bad-signature"),
        pytest.param({"at": datetime.now(UTC) - timedelta(minutes=6)}, "stale_timestamp", id="stale-timestamp"),
        pytest.param({"url": "https://scores.example.com/crm/hubspot/action"}, "invalid_signature", id="signed-for-another-url"),
    ],
)
async def test_hubspot_action_refuses_what_hubspot_did_not_sign(client: httpx.AsyncClient, sign: dict[str, Any], kind: str) -> None:
    response = await post_hubspot(client, hubspot_body(), **sign)

    assert response.status_code == 401, response.text
    assert response.json()["detail"][0]["type"] == kind


@pytest.mark.anyio
async def test_crm_paths_take_no_api_key_in_place_of_their_own_proof(client: httpx.AsyncClient, service_keys) -> None:
    body = json.dumps(hubspot_body()).encode()
    admin = service_keys.header("admin")

    hubspot = await client.post("/crm/hubspot/action", content=body, headers={"Content-Type": "application/json", **admin})
    salesforce = await client.post("/crm/salesforce/outbound", content=outbound_message(notification(nid(1), lid(1))),
                                   headers={"Content-Type": "text/xml", **admin})  # fmt: skip

    assert hubspot.status_code == 401 and hubspot.json()["detail"][0]["type"] == "missing_signature"
    assert salesforce.status_code == 401 and "token" in salesforce.text


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/crm/hubspot/action/", "/crm/hubspot", "/crm/salesforce/outbound/x", "/crm/", "/crm/hubspot/action%2F"])
async def test_only_the_crm_paths_themselves_skip_the_api_key(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(path, json=hubspot_body())

    assert response.status_code == 401 and response.json()["detail"][0]["type"] == "missing_api_key", response.text


BAD_HUBSPOT_BODIES = [
    pytest.param(b'{"callbackId": ', [], "Invalid JSON", id="malformed-json"),
    pytest.param(b"[]", [], "should be an object", id="not-an-object"),
    pytest.param({k: v for k, v in hubspot_body().items() if k != "object"}, ["object"], "Field required", id="no-object"),
    pytest.param({**hubspot_body(), "object": {"objectType": "CONTACT"}}, ["object", "objectId"], "Field required", id="no-object-id"),
    pytest.param({**hubspot_body(), "object": {"objectId": 1.5, "objectType": "CONTACT"}}, ["object", "objectId"], "fractional part", id="fractional-id"),
    pytest.param(hubspot_body(favourite_colour="blue"), ["object", "properties", "favourite_colour"], "unknown HubSpot property", id="unknown-property"),
    pytest.param(hubspot_body(createdate=None), ["object", "properties", "createdate"], "required", id="no-createdate"),
    pytest.param(hubspot_body(numemployees="about twelve"), ["object", "properties", "numemployees"], "finite number", id="non-numeric-employees"),
    pytest.param(hubspot_body(createdate="2999-01-01T00:00:00Z"), ["object", "properties", "createdate"], "in the future", id="created-in-the-future"),
    pytest.param(hubspot_body(country={"code": "FR"}), ["object", "properties", "country"], "", id="property-not-a-value"),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "loc", "message"), BAD_HUBSPOT_BODIES)
async def test_hubspot_client_mistakes_are_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any] | bytes, loc: list[str | int], message: str
) -> None:
    response = await post_hubspot(client, body)

    assert response.status_code == 400, response.text  # never a 5xx: HubSpot would retry it for days
    errors = response.json()["detail"]
    assert any(e["loc"][: len(loc)] == loc and message in e["msg"] for e in errors), errors


@pytest.mark.anyio
async def test_hubspot_record_is_stored_and_scored_with_the_events_the_store_has(
    client: httpx.AsyncClient, crm_env: dict[str, str], service_keys
) -> None:
    from model.leadstore import open_lead_store

    events = [
        {"type": "track", "messageId": f"m-616-{i}", "userId": "616", "event": kind, "timestamp": at}
        for i, (kind, at) in enumerate([("pricing_page_view", "2024-04-20T09:00:00Z"), ("demo_request", "2024-04-25T16:00:00Z")])
    ]
    accepted = await client.post("/events", json={"batch": events}, headers=service_keys.header("score"))
    assert accepted.status_code == 202, accepted.text

    response = await post_hubspot(client, hubspot_body(object_id=616))

    assert response.status_code == 200, response.text
    lead, interactions = open_lead_store(crm_env["LEADSCORE_LEAD_STORE"]).history("616")
    assert lead.attributes["job_role"] == "marketing" and lead.attributes["employee_count"] == "120"  # feature names
    assert lead.created_at == datetime(2024, 3, 1, 10, tzinfo=UTC) and lead.created_at_declared
    assert [i.type for i in interactions] == ["pricing_page_view", "demo_request"]
    lead_body = {"lead_id": "616", "created_at": CREATED, "attributes": dict(lead.attributes),
                 "interactions": [{"type": i.type, "occurred_at": i.occurred_at.isoformat()} for i in interactions]}  # fmt: skip
    single = (await client.post("/score", json={"lead": lead_body}, headers=service_keys.header("score"))).json()
    assert response.json()["outputFields"]["probability"] == pytest.approx(single["probability"], abs=1e-3)


@pytest.mark.anyio
async def test_salesforce_message_is_scored_and_acknowledged(client: httpx.AsyncClient, crm_env: dict[str, str], service_keys) -> None:
    from model.scorelog import lead_pseudonym

    response = await post_salesforce(client, outbound_message(notification(nid(11), lid(11)), notification(nid(12), lid(12))))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert response.content == salesforce_ack()
    log = Path(crm_env["LEADSCORE_SCORE_LOG"]).read_text()
    assert all(lead_pseudonym(lid(i), service_keys.lead.encode()) in log for i in (11, 12))


@pytest.mark.anyio
async def test_salesforce_lead_is_kept_in_the_lead_store(client: httpx.AsyncClient, crm_env: dict[str, str]) -> None:
    from model.leadstore import open_lead_store

    response = await post_salesforce(client, outbound_message(notification(nid(13), lid(13))))

    assert response.status_code == 200, response.text
    lead, _ = open_lead_store(crm_env["LEADSCORE_LEAD_STORE"]).history(lid(13))
    assert lead.attributes["source"] == "referral" and lead.attributes["seniority"] is None
    assert "FirstName" not in lead.attributes  # ignored by the map


@pytest.mark.anyio
async def test_salesforce_redelivery_is_acknowledged_not_scored_twice(client: httpx.AsyncClient, crm_env: dict[str, str], service_keys) -> None:
    from model.scorelog import lead_pseudonym

    message = outbound_message(notification(nid(21), lid(21)))
    log = Path(crm_env["LEADSCORE_SCORE_LOG"])
    ref = lead_pseudonym(lid(21), service_keys.lead.encode())

    first = await post_salesforce(client, message)
    second = await post_salesforce(client, message)

    assert first.status_code == second.status_code == 200
    assert second.content == salesforce_ack()
    assert log.read_text().count(ref) == 1


@pytest.mark.anyio
async def test_salesforce_partly_bad_message_scores_the_rest_and_faults_naming_the_bad_one(
    client: httpx.AsyncClient, crm_env: dict[str, str], service_keys
) -> None:
    from model.scorelog import lead_pseudonym

    message = outbound_message(notification(nid(31), lid(31)), notification(nid(32), lid(32), employees="about twelve"))
    log = Path(crm_env["LEADSCORE_SCORE_LOG"])

    first = await post_salesforce(client, message)
    retry = await post_salesforce(client, message)  # Salesforce sends it again: the good one is not scored twice

    assert first.status_code == retry.status_code == 400
    assert "Notification.1.sObject.NumberOfEmployees" in first.text and "<faultcode>soapenv:Client</faultcode>" in first.text
    assert "Notification.0" not in first.text
    assert log.read_text().count(lead_pseudonym(lid(31), service_keys.lead.encode())) == 1
    assert lead_pseudonym(lid(32), service_keys.lead.encode()) not in log.read_text()


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "loc", "message"), BAD_MESSAGES)
async def test_salesforce_unreadable_message_is_a_400_fault_naming_the_element(
    client: httpx.AsyncClient, body: bytes, loc: tuple[str | int, ...], message: str
) -> None:
    response = await post_salesforce(client, body)

    assert response.status_code == 400, response.text
    assert "<faultcode>soapenv:Client</faultcode>" in response.text
    assert ".".join(map(str, loc)) in response.text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "message_org", "text"),
    [
        pytest.param({"token": None}, ORG_ID, "token", id="no-token"),
        pytest.param({"token": "wrong-token-0123456789"}, ORG_ID, "token", id="wrong-token"),
        pytest.param({}, "00Dyy0000009zZZEAY", "OrganizationId", id="another-org"),
    ],
)
async def test_salesforce_message_from_elsewhere_is_refused(client: httpx.AsyncClient, kwargs: dict[str, Any], message_org: str, text: str) -> None:
    response = await post_salesforce(client, outbound_message(notification(nid(41), lid(41)), org_id=message_org), **kwargs)

    assert response.status_code == 401, response.text
    assert text in response.text


@pytest.mark.anyio
async def test_the_api_document_describes_the_crm_endpoints_without_the_api_key(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/docs.json")).json()["paths"]

    hubspot, salesforce = paths["/crm/hubspot/action"]["post"], paths["/crm/salesforce/outbound"]["post"]
    assert "security" not in hubspot and "security" not in salesforce
    assert {"200", "400", "401", "403"} <= set(hubspot["responses"]) and {"200", "400", "401", "403"} <= set(salesforce["responses"])
    assert "text/xml" in salesforce["responses"]["200"]["content"]


@pytest.mark.anyio
async def test_salesforce_accepts_xml_only_on_its_path(client: httpx.AsyncClient, service_keys) -> None:
    response = await client.post("/score", content=b"<lead/>", headers={"Content-Type": "text/xml", **service_keys.header("score")})

    assert response.status_code == 415


def test_unconfigured_crm_endpoints_refuse_everything(trained_bundle: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import anyio
    from starlette.requests import Request

    from serving.service import LeadScoring

    monkeypatch.setenv("LEADSCORE_BUNDLE", str(trained_bundle))
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    for name in ("LEADSCORE_HUBSPOT_APP_SECRET", "LEADSCORE_SALESFORCE_ORG_IDS", "LEADSCORE_SALESFORCE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    service = LeadScoring()

    def request(path: str, body: bytes, headers: dict[str, str]) -> Request:
        scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "scheme": "http",
                 "server": ("leadscore.test", 80)}  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        return Request(scope, receive)

    body = json.dumps(hubspot_body()).encode()
    hubspot = anyio.run(service.crm.hubspot_action, request("/crm/hubspot/action", body, signed(body)), service.model)
    message = outbound_message(notification(nid(1), lid(1)))
    salesforce = anyio.run(service.crm.salesforce_outbound, request("/crm/salesforce/outbound", message, {}), service.model)

    assert hubspot.status_code == 403 and b"LEADSCORE_HUBSPOT_APP_SECRET" in hubspot.body
    assert salesforce.status_code == 403 and b"LEADSCORE_SALESFORCE_ORG_IDS" in salesforce.body


# -- the real server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crm_server(crm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from benchmarks.local_server import start_server, stop

    workdir = tmp_path_factory.mktemp("crm-server")
    log = workdir / "server.log"
    env = {**os.environ, **crm_env, "BENTOML_HOME": str(workdir / "bentoml"), "LEADSCORE_SCORE_LOG": str(workdir / "scores.jsonl"),
           "LEADSCORE_LEAD_STORE": f"sqlite:///{workdir / 'leads.db'}", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    env.pop("LEADSCORE_PUBLIC_URL", None)
    process, url = start_server(env, log, ready_timeout_s=90.0, fail=pytest.fail)
    try:
        yield url, workdir
    finally:
        stop(process)


@pytest.mark.slow
def test_over_http_hubspot_and_salesforce_are_answered_in_their_formats(crm_server: tuple[str, Path]) -> None:
    url, workdir = crm_server
    body = json.dumps(hubspot_body(object_id=777)).encode()

    hubspot = httpx.post(f"{url}/crm/hubspot/action", content=body, headers=signed(body, url=f"{url}/crm/hubspot/action"), timeout=30)
    unsigned = httpx.post(f"{url}/crm/hubspot/action", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    message = outbound_message(notification(nid(51), lid(51)), notification(nid(52), lid(52)))
    sf_headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    salesforce = httpx.post(f"{url}/crm/salesforce/outbound", params={"token": SF_TOKEN}, content=message, headers=sf_headers, timeout=30)
    again = httpx.post(f"{url}/crm/salesforce/outbound", params={"token": SF_TOKEN}, content=message, headers=sf_headers, timeout=30)
    bomb = httpx.post(f"{url}/crm/salesforce/outbound", params={"token": SF_TOKEN}, content=BILLION_LAUGHS, headers=sf_headers, timeout=30)

    assert hubspot.status_code == 200, hubspot.text
    assert hubspot.json()["outputFields"]["tier"] in ("hot", "warm", "cold")
    assert unsigned.status_code == 401
    assert salesforce.status_code == 200 and salesforce.content == salesforce_ack(), salesforce.text
    assert again.status_code == 200 and again.content == salesforce_ack()
    assert bomb.status_code == 400 and "DTDForbidden" in bomb.text
    time.sleep(0.5)
    records = [json.loads(line) for line in (workdir / "scores.jsonl").read_text().splitlines()]
    assert len(records) == 3  # the HubSpot record and two leads, the redelivery not scored again
    assert SF_TOKEN not in (workdir / "server.log").read_text()
