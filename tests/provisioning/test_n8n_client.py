"""N8nClient against a real n8n; an injected transport only for what n8n cannot be made to do."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from tests.provisioning.conftest import Instance, launch, load_workflow, remove_all, renamed
from zixly.provisioning.n8n.bootstrap import bootstrap_instance
from zixly.provisioning.n8n.client import AUTH_COOKIE, N8nClient
from zixly.provisioning.n8n.errors import (
    N8nNotFoundError,
    N8nRejectedError,
    N8nUnauthorizedError,
    N8nUnavailableError,
)
from zixly.provisioning.runtimes.process import ProcessRuntime

SCHEDULE = load_workflow("schedule-noop.json")
WEBHOOK = load_workflow("webhook-noop.json")


@pytest.fixture(scope="module")
async def instance(
    process_runtime: ProcessRuntime, n8n_http: httpx.AsyncClient
) -> AsyncIterator[Instance]:
    try:
        yield await launch(process_runtime, n8n_http, "client", [])
    finally:
        await remove_all(process_runtime)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- real n8n -------------------------------------------------------------------------------


async def test_workflows_page_with_a_cursor(instance: Instance) -> None:
    api = instance.api
    created = [await api.create_workflow(renamed(SCHEDULE, f"page {i}")) for i in range(3)]
    first = await api.list_workflows(limit=2)
    assert len(first.items) == 2 and first.next_cursor is not None
    second = await api.list_workflows(limit=2, cursor=first.next_cursor)
    assert len(second.items) == 1 and second.next_cursor is None
    listed = {w["id"] for w in first.items + second.items}
    assert listed == {w["id"] for w in created}
    assert {w["id"] for w in await api.all_workflows(limit=1)} == listed
    for workflow in created:
        await api.delete_workflow(workflow["id"])
    assert await api.all_workflows() == []


async def test_create_leaves_out_read_only_fields_of_an_export(instance: Instance) -> None:
    api = instance.api
    assert SCHEDULE["id"] == "exported-id-is-ignored" and SCHEDULE["active"] is True
    created = await api.create_workflow(SCHEDULE)
    try:
        assert created["id"] != SCHEDULE["id"]
        assert created["active"] is False
        fetched = await api.get_workflow(created["id"])
        assert fetched["name"] == SCHEDULE["name"]
        assert [n["type"] for n in fetched["nodes"]] == [
            "n8n-nodes-base.scheduleTrigger",
            "n8n-nodes-base.noOp",
        ]
        assert (await api.activate_workflow(created["id"]))["active"] is True
        assert (await api.get_workflow(created["id"]))["active"] is True
        assert (await api.deactivate_workflow(created["id"]))["active"] is False
    finally:
        await api.delete_workflow(created["id"])
    with pytest.raises(N8nNotFoundError) as caught:
        await api.get_workflow(created["id"])
    assert caught.value.status == 404


async def test_invalid_workflow_is_rejected_with_n8ns_message(instance: Instance) -> None:
    with pytest.raises(N8nRejectedError) as caught:
        await instance.api.create_workflow({"name": "no nodes"})
    assert caught.value.status == 400
    assert "nodes" in caught.value.message


async def test_credentials_schema_create_and_delete(instance: Instance) -> None:
    api = instance.api
    schema = await api.get_credential_schema("httpHeaderAuth")
    assert {"name", "value"} <= set(schema["properties"])
    secret = "s3cr3t-header-value"
    created = await api.create_credential(
        "zixly test header", "httpHeaderAuth", {"name": "X-Zixly", "value": secret}
    )
    assert created["type"] == "httpHeaderAuth" and created["name"] == "zixly test header"
    assert secret not in str(created)  # n8n does not echo credential data
    await api.delete_credential(created["id"])
    with pytest.raises(N8nNotFoundError):
        await api.delete_credential(created["id"])


async def test_executions_of_a_workflow_are_listed_by_status(
    instance: Instance, n8n_http: httpx.AsyncClient
) -> None:
    api = instance.api
    workflow = await api.create_workflow(WEBHOOK)
    try:
        await api.activate_workflow(workflow["id"])
        for _ in range(2):
            hook = await n8n_http.post(f"{instance.url}/webhook/zixly-test-hook", json={"a": 1})
            assert hook.status_code == 200
        runs = await _eventually_two(api, workflow["id"])
        assert {e["workflowId"] for e in runs} == {workflow["id"]}
        first = await api.list_executions(workflow_id=workflow["id"], status="success", limit=1)
        assert len(first.items) == 1 and first.next_cursor is not None
        rest = await api.list_executions(
            workflow_id=workflow["id"], status="success", limit=1, cursor=first.next_cursor
        )
        assert [e["id"] for e in first.items + rest.items] == [e["id"] for e in runs]
        assert (await api.list_executions(workflow_id=workflow["id"], status="error")).items == []
    finally:
        await api.delete_workflow(workflow["id"])


async def _eventually_two(api: N8nClient, workflow_id: str) -> list[dict[str, object]]:
    for _ in range(100):
        page = await api.list_executions(workflow_id=workflow_id, status="success")
        if len(page.items) == 2:
            return page.items
        await asyncio.sleep(0.1)
    raise AssertionError("the two webhook runs never showed up as successful executions")


async def test_a_wrong_api_key_is_unauthorized_and_not_echoed(
    instance: Instance, n8n_http: httpx.AsyncClient
) -> None:
    wrong = "n8n_api_wrong_" + "x" * 30
    with pytest.raises(N8nUnauthorizedError) as caught:
        await N8nClient(instance.url, n8n_http, api_key=wrong).list_workflows()
    assert caught.value.status == 401
    assert wrong not in str(caught.value) and wrong not in repr(caught.value.extensions)
    assert "wrong" not in repr(N8nClient(instance.url, n8n_http, api_key=wrong))


async def test_owner_setup_twice_logs_in_and_keeps_no_cookie_in_the_shared_jar(
    instance: Instance, n8n_http: httpx.AsyncClient
) -> None:
    secrets = instance.secrets
    cookie = await instance.client.setup_owner(
        secrets.owner_email, "A", "B", secrets.owner_password
    )
    assert "workflow:create" in await instance.client.api_key_scopes(cookie)
    assert AUTH_COOKIE not in {c.name for c in n8n_http.cookies.jar}
    with pytest.raises(N8nUnauthorizedError):
        await instance.client.login(secrets.owner_email, secrets.owner_password + "x")


async def test_bootstrap_again_converges_without_duplicates(instance: Instance) -> None:
    template = renamed(SCHEDULE, "converge")
    first = await bootstrap_instance(instance.client, instance.secrets, [template])
    assert first.created == ["converge"] and first.api_key == instance.secrets.api_key
    again = await bootstrap_instance(instance.client, instance.secrets, [template])
    assert again.created == [] and again.workflow_ids == first.workflow_ids
    workflows = await instance.api.all_workflows()
    assert [(w["name"], w["active"]) for w in workflows] == [("converge", True)]

    # A lost API key is replaced: one key per label, the old one stops working.
    lost = replace(instance.secrets, api_key=None)
    replaced = await bootstrap_instance(instance.client, lost, [template])
    assert replaced.api_key != instance.secrets.api_key
    with pytest.raises(N8nUnauthorizedError):
        await instance.api.list_workflows()
    cookie = await instance.client.login(lost.owner_email, lost.owner_password)
    labels = [k["label"] for k in await instance.client.list_api_keys(cookie)]
    assert labels == ["zixly-control-plane"]
    await instance.client.with_api_key(replaced.api_key).delete_workflow(
        replaced.workflow_ids["converge"]
    )
    instance.secrets = replace(lost, api_key=replaced.api_key)
    instance.api = instance.client.with_api_key(replaced.api_key)


# --- failures n8n cannot be made to produce on demand ---------------------------------------


async def test_unreachable_instance_is_unavailable_after_the_retry_window(
    n8n_http: httpx.AsyncClient,
) -> None:
    client = N8nClient(f"http://127.0.0.1:{closed_port()}", n8n_http, api_key="k", retry_for=0.3)
    with pytest.raises(N8nUnavailableError) as caught:
        await client.list_workflows()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    with pytest.raises(N8nUnavailableError, match="not ready after"):
        await client.wait_ready(within=0.3)


async def test_a_timeout_is_unavailable_and_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = N8nClient("http://n8n.test", http, api_key="k", retry_for=5)
        with pytest.raises(N8nUnavailableError, match="timed out") as caught:
            await client.create_workflow(SCHEDULE)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert calls == 1  # a POST that may have taken effect is never sent twice


async def test_routes_not_up_yet_are_retried_until_they_answer() -> None:
    answers = [
        httpx.Response(
            200, text="n8n is starting up. Please wait", headers={"content-type": "text/html"}
        ),
        httpx.Response(
            404,
            text="<pre>Cannot POST /rest/owner/setup</pre>",
            headers={"content-type": "text/html"},
        ),
        httpx.Response(
            200,
            json={"data": {}},
            headers={"set-cookie": f"{AUTH_COOKIE}=session-value; Path=/; HttpOnly"},
        ),
    ]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answers[len(seen) - 1]

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = N8nClient("http://n8n.test", http, retry_for=5, retry_interval=0.01)
        cookie = await client.setup_owner("o@example.com", "O", "W", "Passw0rdPassw0rd")
        assert AUTH_COOKIE not in {c.name for c in http.cookies.jar}
    assert cookie == "session-value"
    assert seen == ["/rest/owner/setup"] * 3


async def test_a_json_404_is_not_found_not_a_missing_route() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"message": "Not Found"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = N8nClient("http://n8n.test", http, api_key="k", retry_for=5)
        with pytest.raises(N8nNotFoundError, match="Not Found"):
            await client.get_workflow("missing")
