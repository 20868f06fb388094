"""Template upgrades on redeploy, against real n8n instances (process runtime).

A template workflow that exists already is left as it is when its rendered template did not
change, replaced in place (same id, still active) when it did and nobody edited the workflow,
and left alone (with an instance event) when the customer edited it.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.provisioning.instance_support import LifecycleEnv
from zixly.provisioning.instances import ActualState, EventRecord, InstanceRepository, Step
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.fingerprints import fingerprint
from zixly.provisioning.operations import STAFF

HEARTBEAT = "manifest:zixly-heartbeat"
HEARTBEAT_NAME = "Zixly: heartbeat"
NODE = "Post heartbeat"
FIRST_URL = "http://127.0.0.1:9/first/ingest"
MOVED_URL = "http://127.0.0.1:9/moved/ingest"


async def provisioned(env: LifecycleEnv, label: str) -> uuid.UUID:
    tenant = await env.tenant(label)
    row = await env.lifecycle(ingest_url=FIRST_URL).provision(tenant, templates=[HEARTBEAT])
    assert row.actual_state is ActualState.RUNNING
    return tenant


async def heartbeat(api: N8nClient) -> dict[str, Any]:
    [listed] = await api.all_workflows(name=HEARTBEAT_NAME)
    return await api.get_workflow(str(listed["id"]))


def url_of(workflow: dict[str, Any]) -> str:
    node = next(n for n in workflow["nodes"] if n["name"] == NODE)
    return str(node["parameters"]["url"])


async def events(env: LifecycleEnv, tenant: uuid.UUID) -> list[EventRecord]:
    async with env.db.transaction(STAFF) as session:
        return await InstanceRepository(session).events(tenant)


def deploy_details(records: list[EventRecord]) -> dict[str, Any]:
    """The details of the last "templates deployed" event."""
    [*_, last] = [r for r in records if r.message == "templates deployed"]
    return dict(last.details or {})


async def test_a_redeploy_of_an_unchanged_template_changes_nothing(env: LifecycleEnv) -> None:
    tenant = await provisioned(env, "upgrade-same")
    api = await env.api(tenant)
    before = await heartbeat(api)
    record = (await env.row(tenant)).template_fingerprints[HEARTBEAT_NAME]
    # What n8n stored fingerprints like the rendered template (its additions on save do not
    # count), and the record names the workflow Zixly created.
    assert record["workflow_id"] == before["id"]
    assert record["deployed"] == fingerprint(before) == record["template"]

    row = await env.lifecycle(ingest_url=FIRST_URL).deploy_templates(tenant, [HEARTBEAT])

    after = await heartbeat(api)
    assert after["id"] == before["id"]
    assert (after["updatedAt"], after["versionId"]) == (before["updatedAt"], before["versionId"])
    assert row.template_fingerprints[HEARTBEAT_NAME] == record
    details = deploy_details(await events(env, tenant))
    assert details["unchanged"] == [HEARTBEAT_NAME]
    assert details["updated"] == [] and details["skipped"] == {} and details["created"] == []


async def test_b_a_changed_ingest_url_updates_the_workflow_in_place(env: LifecycleEnv) -> None:
    tenant = await provisioned(env, "upgrade-moved")
    api = await env.api(tenant)
    before = await heartbeat(api)
    assert url_of(before) == f"{FIRST_URL}/heartbeat" and before["active"] is True
    old = (await env.row(tenant)).template_fingerprints[HEARTBEAT_NAME]

    row = await env.lifecycle(ingest_url=MOVED_URL).deploy_templates(tenant, [HEARTBEAT])

    after = await heartbeat(api)
    assert after["id"] == before["id"]
    assert url_of(after) == f"{MOVED_URL}/heartbeat"
    assert after["active"] is True and after["activeVersionId"] == after["versionId"]
    assert after["versionId"] != before["versionId"]
    assert await env.workflows(tenant) == [(HEARTBEAT_NAME, True)]
    new = row.template_fingerprints[HEARTBEAT_NAME]
    assert new["workflow_id"] == before["id"]
    assert new["template"] != old["template"] and new["deployed"] == fingerprint(after)
    details = deploy_details(await events(env, tenant))
    assert details["updated"] == [HEARTBEAT_NAME] and details["skipped"] == {}
    # The updated version is the one running: its webhook answers.
    response = await env.http.post(f"{api.base_url}/webhook/zixly-heartbeat")
    assert response.status_code == 200

    # Deploying the same again now changes nothing.
    await env.lifecycle(ingest_url=MOVED_URL).deploy_templates(tenant, [HEARTBEAT])
    assert (await heartbeat(api))["updatedAt"] == after["updatedAt"]


async def test_c_a_workflow_the_customer_edited_is_left_alone(env: LifecycleEnv) -> None:
    tenant = await provisioned(env, "upgrade-edited")
    api = await env.api(tenant)
    deployed = await heartbeat(api)
    record = (await env.row(tenant)).template_fingerprints[HEARTBEAT_NAME]
    edited = dict(deployed)
    edited["nodes"] = [
        {**n, "parameters": {**n["parameters"], "url": "https://customer.example/hook"}}
        if n["name"] == NODE
        else n
        for n in deployed["nodes"]
    ]
    await api.update_workflow(str(deployed["id"]), edited)  # the "customer", public API
    customer = await heartbeat(api)
    assert url_of(customer) == "https://customer.example/hook"

    # A PROVISION of the existing instance deploys its templates, now rendered differently.
    row = await env.lifecycle(ingest_url=MOVED_URL).provision(tenant, templates=[HEARTBEAT])

    after = await heartbeat(api)
    assert after["id"] == deployed["id"]
    assert url_of(after) == "https://customer.example/hook"
    assert (after["updatedAt"], after["versionId"]) == (
        customer["updatedAt"],
        customer["versionId"],
    )
    assert after["active"] is True
    assert row.template_fingerprints[HEARTBEAT_NAME] == record  # still what Zixly wrote
    records = await events(env, tenant)
    [skipped] = [r for r in records if (r.details or {}).get("outcome") == "skipped"]
    assert skipped.kind.value == "STEP" and skipped.step is Step.TEMPLATES
    assert "has local changes" in skipped.message and HEARTBEAT_NAME in skipped.message
    assert skipped.details is not None
    assert skipped.details["reason"] == "edited"
    assert skipped.details["workflow_id"] == deployed["id"]
    assert deploy_details(records)["skipped"] == {HEARTBEAT_NAME: "edited"}


async def test_a_workflow_deployed_before_records_were_kept_is_adopted_or_skipped(
    env: LifecycleEnv,
) -> None:
    tenant = await provisioned(env, "upgrade-legacy")
    api = await env.api(tenant)
    before = await heartbeat(api)
    forget = "UPDATE n8n_instances SET template_fingerprints = '{}' WHERE tenant_id = $1"
    await env.owner.execute(forget, tenant)

    # Matches the template as rendered now: adopted, untouched.
    row = await env.lifecycle(ingest_url=FIRST_URL).deploy_templates(tenant, [HEARTBEAT])
    assert row.template_fingerprints[HEARTBEAT_NAME]["workflow_id"] == before["id"]
    assert (await heartbeat(api))["updatedAt"] == before["updatedAt"]

    # Without a record, a differing workflow cannot be told from an edited one: left alone.
    await env.owner.execute(forget, tenant)
    row = await env.lifecycle(ingest_url=MOVED_URL).deploy_templates(tenant, [HEARTBEAT])
    after = await heartbeat(api)
    assert url_of(after) == f"{FIRST_URL}/heartbeat" and after["updatedAt"] == before["updatedAt"]
    assert HEARTBEAT_NAME not in row.template_fingerprints
    assert deploy_details(await events(env, tenant))["skipped"] == {HEARTBEAT_NAME: "unrecorded"}
