"""The OpenAPI schema's finishing touches: who may call each operation, and how ids flow.

Four drf-spectacular postprocessing hooks (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]):

- `audience_tags` tags every operation `senders`, `mobile-users` or both, read from its view's
  permission classes (or given by `extend_schema(tags=...)` where one method of a view serves
  fewer callers than its permissions admit), so that docs group by caller and a schema fuzzer
  run as one kind of caller can leave out what only the other may call (`st run --include-tag
  senders`);
- `id_links` adds OpenAPI links from the operations that create or list an object to every
  operation whose path names it (`POST messages/` -> `GET messages/{message_id}/`, ...), so a
  fuzzer (schemathesis' stateful phase) calls them with ids that exist rather than random ones
  that all answer 404. Links are generated from `ID_SOURCES` and the paths: an operation whose
  path names an id no source produces fails `tests/ops/test_schema_fuzz.py`;
- `request_examples` gives the request fields that must name something existing an example
  that does: phone numbers name `EXAMPLE_PHONE` (create that mobile user on the server a fuzzer
  runs against), an upload is a minimal PDF. A fuzzer's positive cases built from the examples
  then get past "unknown recipient" and "not an image" to the real logic;
- `request_examples` also documents what every request string refuses: NUL characters
  (PostgreSQL cannot store them; the API answers 400), as a pattern;
- `json_request_bodies` documents JSON as the one request body of every operation that takes
  JSON (SPEC: "All JSON"): DRF's form parsers also read flat fields, but no list or nested object
  (a batch's messages, a bulk requeue's ids) survives a form encoding, so documenting them would
  promise bodies the API refuses. Uploads stay multipart. A body with required fields is itself
  required (a device's PATCH without one is a 400).
"""

from __future__ import annotations

from apps.accounts.permissions import IsMobileUser, IsSender

SENDERS = "senders"
MOBILE_USERS = "mobile-users"
TAG_DESCRIPTIONS = {
    SENDERS: "Operations for senders (business users): `Authorization: Token <sender token>`.",
    MOBILE_USERS: "Operations for mobile users: `Authorization: Token <mobile user token>`.",
}
METHODS = ("get", "put", "patch", "post", "delete")


def _audience(view_class) -> list[str]:
    """Return the tags of the callers `view_class`'s permissions admit."""
    permissions = list(getattr(view_class, "permission_classes", ()))
    if any(issubclass(p, IsMobileUser) for p in permissions):
        return [MOBILE_USERS]
    # Every sender-only permission (send_message, manage_dead_letters, ...) is a Has_<codename>.
    if any(issubclass(p, IsSender) or p.__name__.startswith("Has_") for p in permissions):
        return [SENDERS]
    return [SENDERS, MOBILE_USERS]


def audience_tags(result: dict, generator, request, public) -> dict:
    """Tag each operation with the kinds of caller its view admits (see the module docstring)."""
    views = {
        (path, method.lower()): getattr(callback, "cls", None)
        for path, _regex, method, callback in generator.endpoints
    }
    for path, item in result["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            view = views.get((path, method))
            explicit = operation is not None and set(operation.get("tags", ())) <= set(TAG_DESCRIPTIONS)
            if operation is not None and view is not None and not explicit:
                operation["tags"] = _audience(view)
    used = {tag for item in result["paths"].values() for op in item.values() for tag in op.get("tags", ())}
    result["tags"] = [
        {"name": name, "description": TAG_DESCRIPTIONS[name]}
        for name in (SENDERS, MOBILE_USERS)
        if name in used
    ]
    return result


# Path parameter -> the operations whose successful answer carries such an id: (operationId, the
# answer's statuses, a JSON pointer into the answer's body).
ID_SOURCES: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "message_id": [
        ("v1_messages_create", ("202", "200"), "/id"),
        ("v1_conversations_messages_create", ("202",), "/id"),
        ("v1_messages_list", ("200",), "/results/0/id"),
    ],
    "conversation_id": [
        ("v1_conversations_create", ("201", "200"), "/id"),
        ("v1_conversations_list", ("200",), "/results/0/id"),
    ],
    "media_id": [("v1_media_create", ("201",), "/id")],
    "device_id": [
        ("v1_devices_create", ("201", "200"), "/id"),
        ("v1_devices_list", ("200",), "/results/0/id"),
    ],
    "dead_letter_id": [("v1_dead_letters_list", ("200",), "/results/0/id")],
    "broadcast_id": [("v1_messages_broadcast_create", ("202",), "/id")],
    "endpoint_id": [
        ("v1_webhooks_create", ("201",), "/id"),
        ("v1_webhooks_list", ("200",), "/results/0/id"),
    ],
    "delivery_id": [("v1_webhooks_deliveries_list", ("200",), "/results/0/id")],
}
# Ids a request body names, and where their sources put them: operationId -> (body, source).
BODY_LINKS: dict[str, tuple[dict, tuple[str, tuple[str, ...], str]]] = {
    "dead_letters_bulk_requeue": (
        {"ids": ["$response.body#/results/0/id"]},
        ("v1_dead_letters_list", ("200",), "/results/0/id"),
    ),
}


def _operations(result: dict) -> dict[str, tuple[str, dict]]:
    """Return operationId -> (path, operation)."""
    return {
        op["operationId"]: (path, op)
        for path, item in result["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def path_parameters(operation: dict) -> list[str]:
    return [p["name"] for p in operation.get("parameters", ()) if p.get("in") == "path"]


def id_links(result: dict, generator, request, public) -> dict:
    """Link each id's sources to the operations whose path names it (see the module docstring)."""
    operations = _operations(result)
    for target_id, (_path, target) in operations.items():
        names = path_parameters(target)
        for name in names:
            for source_id, statuses, pointer in ID_SOURCES.get(name, ()):
                if source_id not in operations or source_id == target_id:
                    continue
                source = operations[source_id][1]
                # The target's other path parameters come from the source's own request path.
                others = [n for n in names if n != name]
                if not set(others) <= set(path_parameters(source)):
                    continue
                parameters = {name: f"$response.body#{pointer}", **{n: f"$request.path.{n}" for n in others}}
                _link(source, statuses, target_id, {"operationId": target_id, "parameters": parameters})
    for target_id, (body, (source_id, statuses, _pointer)) in BODY_LINKS.items():
        if target_id in operations and source_id in operations:
            _link(
                operations[source_id][1], statuses, target_id, {"operationId": target_id, "requestBody": body}
            )
    return result


def _link(source: dict, statuses: tuple[str, ...], name: str, link: dict) -> None:
    for status in statuses:
        response = source["responses"].get(status)
        if response is not None:
            response.setdefault("links", {})[name] = link


# The mobile user the examples name (a fictional number libphonenumber accepts).
EXAMPLE_PHONE = "+14155550100"
# The smallest document the upload accepts (its type is decided from its first bytes).
EXAMPLE_PDF = "%PDF-1.4\n%%EOF\n"
# Request property -> (example, the schema `type` it must have to get it).
PROPERTY_EXAMPLES: dict[str, tuple[object, str]] = {
    "recipient_phone_number": (EXAMPLE_PHONE, "string"),
    "mobile_phone_number": (EXAMPLE_PHONE, "string"),
    "recipient_phone_numbers": ([EXAMPLE_PHONE], "array"),
    "attachment_ids": ([], "array"),
    # A scheduled time must be in the future: no fixed example can be; null sends at once.
    "send_at": (None, "string"),
    "file": (EXAMPLE_PDF, "string"),
    "timezone": ("Europe/Paris", "string"),
    "url": ("https://hooks.example.com/messaging", "string"),
}


def _add_examples(schema: object) -> None:
    if isinstance(schema, dict):
        for name, prop in (schema.get("properties") or {}).items():
            example = PROPERTY_EXAMPLES.get(name)
            if example is not None and isinstance(prop, dict) and prop.get("type") == example[1]:
                if example[0] is None and not prop.get("nullable"):
                    continue
                prop["example"] = example[0]
        for value in schema.values():
            _add_examples(value)
    elif isinstance(schema, list):
        for value in schema:
            _add_examples(value)


# Request strings refuse NUL (400): documented on every free-form one (no format, enum or pattern).
NO_NUL_PATTERN = "^[^\\u0000]*$"


def _refuse_nul(schema: object) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "string" and not {"format", "enum", "pattern"} & set(schema):
            schema["pattern"] = NO_NUL_PATTERN
        for value in schema.values():
            _refuse_nul(value)
    elif isinstance(schema, list):
        for value in schema:
            _refuse_nul(value)


def request_examples(result: dict, generator, request, public) -> dict:
    """Give request fields that name existing things an example that does (see the docstring)."""
    # Request bodies' own components (COMPONENT_SPLIT_REQUEST names them `...Request`).
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            _add_examples(component)
            _refuse_nul(component)
    for item in result["paths"].values():
        for method in METHODS:
            body = (item.get(method) or {}).get("requestBody")
            if body is not None:
                _add_examples(body)
                _refuse_nul(body)
    return result


JSON = "application/json"


def json_request_bodies(result: dict, generator, request, public) -> dict:
    """Keep JSON alone as the request body of operations that take it (see the docstring)."""
    components = result.get("components", {}).get("schemas", {})
    for item in result["paths"].values():
        for method in METHODS:
            body = (item.get(method) or {}).get("requestBody") or {}
            content = body.get("content")
            if content and JSON in content:
                for media_type in [m for m in content if m != JSON]:
                    del content[media_type]
                schema = content[JSON].get("schema", {})
                if "$ref" in schema:
                    schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
                if schema.get("required"):
                    body["required"] = True
    return result
