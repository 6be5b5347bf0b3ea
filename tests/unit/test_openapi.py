"""/api/v1/openapi.json describes every answer of the JSON API, so a CI system can generate a client."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

API = "/api/v1"
NOT_JSON = {f"{API}/metrics": "text/plain",  # Prometheus' text format
            f"{API}/submissions/{{submission_id}}/repair/adapter": "application/zip"}  # the repaired adapter


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from api.app import create_app
    from ftgate.settings import Settings

    # SQLite and the filesystem broker in a temporary folder: building the schema connects to neither.
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("data"), broker_url="", secret_key="k" * 32))


def _resolve(schema: dict, components: dict) -> dict:
    ref = schema.get("$ref", "")
    return components[ref.rsplit("/", 1)[-1]] if ref else schema


def _has_properties(schema: dict | None, components: dict) -> bool:
    """A described object: a model with named fields, not FastAPI's empty ``{}`` for an untyped answer."""
    return bool(schema) and bool(_resolve(schema, components).get("properties"))


def test_every_api_route_is_in_the_schema(app):
    hidden = [r.path for r in app.routes if isinstance(r, APIRoute) and r.path.startswith(API) and not r.include_in_schema]
    assert hidden == []


def test_every_json_answer_under_api_v1_has_a_response_schema(app):
    spec = app.openapi()
    components = spec["components"]["schemas"]
    operations = [(f"{method.upper()} {path}", path, op) for path, ops in spec["paths"].items()
                  if path.startswith(f"{API}/") for method, op in ops.items()]
    assert len(operations) >= 25  # the walk sees the routers (health, submissions, catalog, admin, account)

    undescribed = []
    for name, path, op in operations:
        successes = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert successes, f"{name} declares no success answer"
        for code, response in successes.items():
            content = response.get("content", {})
            if code == "204":
                assert not content, f"{name}: 204 has no body"
            elif path in NOT_JSON:
                assert set(content) == {NOT_JSON[path]}, f"{name} is not JSON: it must not promise JSON"
            elif not _has_properties(content.get("application/json", {}).get("schema"), components):
                undescribed.append(f"{name} {code}")
        # errors: the shape api/errors.py sends, not FastAPI's default {"detail": [...]}
        assert op["responses"]["4XX"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
        assert "422" not in op["responses"], f"{name} documents FastAPI's 422 shape, which is not sent"
    assert undescribed == []
    assert "HTTPValidationError" not in components


def test_the_upload_documents_both_answers(app):
    responses = app.openapi()["paths"][f"{API}/submissions"]["post"]["responses"]
    for code in ("200", "202"):  # 202: a new submission; 200: the same artifact was already submitted
        assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SubmissionCreated"}


def test_request_bodies_are_models(app):
    """No route takes a free-form JSON object: every body is a named model (e.g. the password a user gets)."""
    spec = app.openapi()
    components = spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                assert _has_properties(body["schema"], components), f"{method.upper()} {path}"
    password = spec["paths"][f"{API}/admin/users/{{user_id}}/password"]["post"]["requestBody"]
    schema = _resolve(password["content"]["application/json"]["schema"], components)
    assert schema["required"] == ["password"] and schema["properties"]["password"]["minLength"] == 8
