"""The simulated funnel written as a CRM exports it: HubSpot-shaped and Salesforce-shaped files.

The same leads, events and conversions as `write_simulation`'s contract files, spread over the
objects a CRM export holds and named with the CRM's own property and value names, so that
`examples/hubspot.yaml` and `examples/salesforce.yaml` can be trained by config alone and
compared with the contract-format run on the same funnel.

* HubSpot: `contacts.csv` (`hs_object_id`, `createdate`, `lifecyclestage`, `jobtitle`,
  `hs_seniority`, `hs_analytics_source`, ...), `companies.csv` (`industry`,
  `numberofemployees`, ...), `deals.csv` (`dealstage` `closedwon`/`closedlost`/open stages,
  `closedate`, `amount`, `pipeline`), `engagements.csv` (`hs_timestamp`, `hs_engagement_type`
  EMAIL/CALL/MEETING), `email_events.csv` (OPEN, CLICK, BOUNCE, STATUSCHANGE) and
  `web_events.csv` (page views and custom behavioural events).
* Salesforce: `Lead.csv` (`Id`, `CreatedDate`, `Title`, `LeadSource`, `Status`,
  `IsConverted`, `ConvertedOpportunityId`, ...), `Account.csv`, `Opportunity.csv`
  (`StageName` "Closed Won", `CloseDate`, `IsWon`, `Amount`), `Task.csv` (`Subject`, `Type`,
  `TaskSubtype`, `ActivityDate`, `CompletedDateTime`) and `CampaignMember.csv` (webinars).

Every file is written in a fixed order from the simulation: same simulation, same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from simulator.funnel import Simulation

CrmFormat = Literal["hubspot", "salesforce"]
CRM_FORMATS: tuple[str, ...] = ("hubspot", "salesforce")

# Contract type -> (HubSpot file, value of its type column).
_HUBSPOT_EVENTS: dict[str, tuple[str, str]] = {
    "page_view": ("web_events", "e_visited_page"),
    "pricing_page_view": ("web_events", "pe_visited_pricing_page"),
    "whitepaper_download": ("web_events", "pe_downloaded_whitepaper"),
    "webinar_registration": ("web_events", "pe_registered_for_webinar"),
    "webinar_attended": ("web_events", "pe_attended_webinar"),
    "form_submit": ("web_events", "e_submitted_form"),
    "chat_started": ("web_events", "pe_started_chat"),
    "email_open": ("email_events", "OPEN"),
    "email_click": ("email_events", "CLICK"),
    "email_bounce": ("email_events", "BOUNCE"),
    "unsubscribe": ("email_events", "STATUSCHANGE"),
    "demo_request": ("engagements", "CALL"),
    "meeting_booked": ("engagements", "MEETING"),
}
# Contract type -> (Salesforce object, Subject or Status, Type, TaskSubtype).
_SALESFORCE_EVENTS: dict[str, tuple[str, str, str, str]] = {
    "page_view": ("Task", "Web: Page View", "Other", "Task"),
    "pricing_page_view": ("Task", "Web: Pricing Page View", "Other", "Task"),
    "whitepaper_download": ("Task", "Content: White Paper Download", "Other", "Task"),
    "form_submit": ("Task", "Web: Form Submission", "Other", "Task"),
    "chat_started": ("Task", "Web: Chat Started", "Other", "Task"),
    "email_open": ("Task", "Email: Opened", "Email", "ListEmail"),
    "email_click": ("Task", "Email: Clicked", "Email", "ListEmail"),
    "email_bounce": ("Task", "Email: Bounced", "Email", "ListEmail"),
    "unsubscribe": ("Task", "Email: Unsubscribed", "Email", "ListEmail"),
    "demo_request": ("Task", "Demo Request Call", "Call", "Call"),
    "meeting_booked": ("Task", "Meeting Booked", "Meeting", "Task"),
    "webinar_registration": ("CampaignMember", "Registered", "", ""),
    "webinar_attended": ("CampaignMember", "Attended", "", ""),
}
_OPEN_DEAL_STAGES = ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin")


def _hubspot_time(values: pd.Series) -> pd.Series:
    # HubSpot's export: "2024-01-03 13:00:57" in the portal's zone (UTC here).
    return values.dt.strftime("%Y-%m-%d %H:%M:%S").where(values.notna(), "")


def _salesforce_time(values: pd.Series) -> pd.Series:
    # Salesforce's API form: "2024-01-03T13:00:57.000+0000".
    return values.dt.strftime("%Y-%m-%dT%H:%M:%S.000+0000").where(values.notna(), "")


def _amounts(rng: np.random.Generator, employees: pd.Series) -> np.ndarray:
    return np.round(2_000 + 40 * employees.fillna(50).to_numpy() ** 0.7 * rng.lognormal(0, 0.4, len(employees)), -1)


def write_hubspot(sim: Simulation, out_dir: Path, seed: int = 0) -> None:
    """Write the funnel as a HubSpot CRM export (contacts, companies, deals, engagements, events).

    Won deals close when the simulated lead converted; some unconverted leads have a lost or
    an open deal, and some converted ones lost a deal before the won one.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    leads = sim.leads.reset_index(drop=True)
    n = len(leads)
    contact_id = pd.Series(np.arange(101, 101 + n), dtype="int64").astype(str)
    company_id = pd.Series(np.arange(5_001, 5_001 + n), dtype="int64").astype(str)
    by_lead = dict(zip(leads["lead_id"], contact_id, strict=True))
    converted = leads["converted_at"].notna()
    lifecycle = np.where(converted, "customer", rng.choice(["lead", "marketingqualifiedlead", "salesqualifiedlead", "subscriber"], n))
    pd.DataFrame(
        {
            "hs_object_id": contact_id,
            "createdate": _hubspot_time(leads["created_at"]),
            "email": leads["email"],
            "jobtitle": leads["job_role"],
            "hs_seniority": leads["seniority"],
            "country": leads["country"],
            "hs_analytics_source": leads["source"].str.upper(),
            "hs_marketable_status": np.where(leads["marketing_consent"] == "yes", "true", "false"),
            "lifecyclestage": lifecycle,
            "company": "Company " + company_id,
            "associatedcompanyid": company_id,
        }
    ).to_csv(out_dir / "contacts.csv", index=False)
    pd.DataFrame(
        {
            "hs_object_id": company_id,
            "name": "Company " + company_id,
            "industry": leads["industry"].str.upper(),
            "numberofemployees": leads["employee_count"],
            "company_size": leads["company_size"],
        }
    ).to_csv(out_dir / "companies.csv", index=False)

    amounts = _amounts(rng, leads["employee_count"])
    won = pd.DataFrame({"contact": contact_id[converted], "dealstage": "closedwon", "closedate": leads.loc[converted, "converted_at"],
                        "amount": amounts[converted.to_numpy()]})  # fmt: skip
    # A lost deal before the won one for a fifth of the customers; lost or open deals for others.
    earlier = converted & (rng.random(n) < 0.2)
    lost_before = pd.DataFrame({"contact": contact_id[earlier], "dealstage": "closedlost",
                                "closedate": leads.loc[earlier, "created_at"] + (leads.loc[earlier, "converted_at"] - leads.loc[earlier, "created_at"]) / 2,
                                "amount": amounts[earlier.to_numpy()]})  # fmt: skip
    others = ~converted & (rng.random(n) < 0.3)
    stage = rng.choice(["closedlost", *_OPEN_DEAL_STAGES], int(others.sum()))
    closing = leads.loc[others, "created_at"] + pd.to_timedelta(rng.uniform(20, 120, int(others.sum())), unit="D")
    closing = closing.where(closing <= pd.Timestamp(sim.meta["export_at"]), pd.Timestamp(sim.meta["export_at"]))
    other = pd.DataFrame({"contact": contact_id[others], "dealstage": stage, "closedate": closing, "amount": amounts[others.to_numpy()]})
    deals = pd.concat([lost_before, won, other], ignore_index=True)
    pd.DataFrame(
        {
            "hs_object_id": np.arange(90_001, 90_001 + len(deals)).astype(str),
            "dealname": "Deal " + deals["contact"],
            "pipeline": "default",
            "dealstage": deals["dealstage"],
            "closedate": _hubspot_time(deals["closedate"]),
            "amount": deals["amount"],
            "associated_contact_id": deals["contact"],
        }
    ).to_csv(out_dir / "deals.csv", index=False)

    events = sim.interactions.reset_index(drop=True)
    target = events["type"].map(lambda t: _HUBSPOT_EVENTS[t][0])
    name = events["type"].map(lambda t: _HUBSPOT_EVENTS[t][1])
    contact = events["lead_id"].map(by_lead)
    when = _hubspot_time(events["occurred_at"])
    ids = pd.Series(np.arange(1, len(events) + 1) + 10_000_000).astype(str)
    files = {
        "engagements": pd.DataFrame({"hs_object_id": ids, "contact_id": contact, "hs_timestamp": when, "hs_engagement_type": name}),
        "email_events": pd.DataFrame({"id": ids, "contact_id": contact, "created": when, "type": name}),
        "web_events": pd.DataFrame({"id": ids, "contact_id": contact, "hs_timestamp": when, "hs_event_name": name,
                                    "hs_channel": events["channel"]}),  # fmt: skip
    }
    for stem, frame in files.items():
        frame[target == stem].to_csv(out_dir / f"{stem}.csv", index=False)
    _write_meta(sim, out_dir, "hubspot")


def write_salesforce(sim: Simulation, out_dir: Path, seed: int = 0) -> None:
    """Write the funnel as a Salesforce export (Lead, Account, Opportunity, Task, CampaignMember).

    A lead converts into an opportunity when sales qualify it: every simulated conversion is a
    `Closed Won` opportunity (`CloseDate` the conversion day), and a share of the others were
    converted too but their opportunity is `Closed Lost` or still open.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    leads = sim.leads.reset_index(drop=True)
    n = len(leads)
    lead_id = pd.Series([f"00Q{i:012d}" for i in range(1, n + 1)])
    by_lead = dict(zip(leads["lead_id"], lead_id, strict=True))
    won = leads["converted_at"].notna()
    qualified = won | (rng.random(n) < 0.15)
    opportunity_id = pd.Series([f"006{i:012d}" for i in range(1, n + 1)]).where(qualified, "")
    account_id = pd.Series([f"001{i:012d}" for i in range(1, n + 1)]).where(qualified, "")
    export_at = pd.Timestamp(sim.meta["export_at"])
    lost_close = (leads["created_at"] + pd.to_timedelta(rng.uniform(20, 120, n), unit="D")).clip(upper=export_at)
    close = leads["converted_at"].where(won, lost_close)
    status = np.where(qualified, "Closed - Converted", rng.choice(["Open - Not Contacted", "Working - Contacted", "Closed - Not Converted"], n))
    pd.DataFrame(
        {
            "Id": lead_id,
            "CreatedDate": _salesforce_time(leads["created_at"]),
            "Email": leads["email"],
            "Title": leads["job_role"],
            "Seniority__c": leads["seniority"],
            "Industry": leads["industry"].str.replace("_", " ").str.title(),
            "NumberOfEmployees": leads["employee_count"],
            "Company_Size__c": leads["company_size"],
            "Country": leads["country"],
            "LeadSource": leads["source"].str.replace("_", " ").str.title(),
            "HasOptedOutOfEmail": np.where(leads["marketing_consent"] == "yes", "false", "true"),
            "Status": status,
            "IsConverted": np.where(qualified, "true", "false"),
            "ConvertedDate": close.dt.strftime("%Y-%m-%d").where(qualified, ""),
            "ConvertedAccountId": account_id,
            "ConvertedOpportunityId": opportunity_id,
        }
    ).to_csv(out_dir / "Lead.csv", index=False)
    pd.DataFrame(
        {"Id": account_id[qualified], "Name": "Account " + account_id[qualified], "Type": np.where(won[qualified], "Customer", "Prospect"),
         "NumberOfEmployees": leads.loc[qualified, "employee_count"]}  # fmt: skip
    ).to_csv(out_dir / "Account.csv", index=False)
    open_stage = rng.choice(["Closed Lost", "Closed Lost", "Prospecting", "Qualification", "Negotiation/Review"], n)
    stage = np.where(won, "Closed Won", open_stage)
    pd.DataFrame(
        {
            "Id": opportunity_id[qualified],
            "AccountId": account_id[qualified],
            "Name": "Opportunity " + opportunity_id[qualified],
            "StageName": stage[qualified.to_numpy()],
            "CloseDate": close[qualified].dt.strftime("%Y-%m-%d"),
            "IsWon": np.where(won[qualified], "true", "false"),
            "IsClosed": np.where(np.char.startswith(stage[qualified.to_numpy()].astype(str), "Closed"), "true", "false"),
            "Amount": _amounts(rng, leads.loc[qualified, "employee_count"]),
        }
    ).to_csv(out_dir / "Opportunity.csv", index=False)

    events = sim.interactions.reset_index(drop=True)
    spec = events["type"].map(_SALESFORCE_EVENTS)
    target = spec.str[0]
    who = events["lead_id"].map(by_lead)
    when = _salesforce_time(events["occurred_at"])
    tasks = target == "Task"
    pd.DataFrame(
        {
            "Id": [f"00T{i:012d}" for i in range(1, int(tasks.sum()) + 1)],
            "WhoId": who[tasks],
            "Subject": spec[tasks].str[1],
            "Type": spec[tasks].str[2],
            "TaskSubtype": spec[tasks].str[3],
            "Status": "Completed",
            "ActivityDate": events.loc[tasks, "occurred_at"].dt.strftime("%Y-%m-%d"),
            "CompletedDateTime": when[tasks],
        }
    ).to_csv(out_dir / "Task.csv", index=False)
    members = ~tasks
    pd.DataFrame(
        {
            "Id": [f"00v{i:012d}" for i in range(1, int(members.sum()) + 1)],
            "CampaignId": "701000000000001",
            "LeadId": who[members],
            "Status": spec[members].str[1],
            "CreatedDate": when[members],
        }
    ).to_csv(out_dir / "CampaignMember.csv", index=False)
    _write_meta(sim, out_dir, "salesforce")


def _write_meta(sim: Simulation, out_dir: Path, crm: str) -> None:
    meta = {**sim.meta, "format": crm}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def write_crm_export(sim: Simulation, out_dir: Path, crm: CrmFormat) -> None:
    """Write `sim` as the export of `crm` ("hubspot" or "salesforce") into `out_dir`."""
    writers = {"hubspot": write_hubspot, "salesforce": write_salesforce}
    if crm not in writers:
        raise ValueError(f"unknown CRM format {crm!r}; one of {list(CRM_FORMATS)}")
    writers[crm](sim, Path(out_dir))


def write_export(sim: Simulation, out_dir: Path, export_format: str) -> None:
    """Write `sim` in the contract's format ("contract", with truth.csv) or as a CRM's export."""
    if export_format == "contract":
        from simulator.funnel import write_simulation

        write_simulation(sim, Path(out_dir))
        return
    write_crm_export(sim, Path(out_dir), export_format)  # type: ignore[arg-type]  # checked there, named in the error
