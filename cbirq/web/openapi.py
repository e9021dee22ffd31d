"""The OpenAPI 3.1 description of `cbirq serve`'s JSON API, written out by hand: every endpoint's
parameters, body and answers, the answers being the `--json` objects of docs/formats.md, so
that client generators and API explorers have types to work with. Objects allow keys beyond
those listed: new ones may be added (formats.md). tests/e2e/test_web.py validates the document
and checks the server's real answers against it."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING, INTEGER, NUMBER, BOOLEAN = ({"type": t} for t in ("string", "integer", "number", "boolean"))
TIME = {"type": ["number", "null"], "description": "Unix time"}


def maybe(kind: str) -> Schema:
    return {"type": [kind, "null"]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def record(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these keys (`required` always there)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def listing(item: Schema) -> Schema:
    return {"type": "array", "items": item}


def answer(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def failure(description: str) -> Schema:
    return answer(description, ref("Error"))


def query_param(name: str, description: str, schema: Schema, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


RESULT = record(
    {"rank": {**INTEGER, "minimum": 1}, "path": STRING, "score": NUMBER},
    {"cosine": {**NUMBER, "description": "the plain cosine, whatever the ranking options"}},
)
OPTIONS = record(
    {"center": BOOLEAN, "whiten": BOOLEAN, "qe": INTEGER, "multiscale": BOOLEAN},
    {"qe_ratio": NUMBER},
)
QUERY_ANSWER = record(
    {
        "query": {
            **STRING,
            "description": "the upload's file name, the library path, or the words",
        },
        "index": STRING,
        "model": STRING,
        "weights": STRING,
        "metric": {"enum": ["cosine", "euclidean"]},
        "options": OPTIONS,
        "results": listing(RESULT),
        "ranking": {**STRING, "description": "the ranking options in words"},
    }
)
INDEX = record(
    {
        "name": STRING,
        "model": STRING,
        "weights": STRING,
        "dim": INTEGER,
        "count": INTEGER,
        "sources": listing(STRING),
        "updated": TIME,
    }
)
JOB_COMMON = {
    "id": STRING,
    "state": STRING,
    "created": NUMBER,
    "updated": NUMBER,
    "error": maybe("string"),
    "worker": maybe("string"),
    "waiting": {**maybe("string"), "description": "why a queued job waits"},
}
EPOCH = record(
    {"epoch": INTEGER},
    {
        name: NUMBER
        for name in ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
    },
)
TRAIN_JOB = record(
    {
        **JOB_COMMON,
        "kind": {"const": "train"},
        "config": {"type": "object"},
        "data": maybe("string"),
        "resumed_from": maybe("string"),
        "epoch": INTEGER,
        "epochs": INTEGER,
        "step": INTEGER,
        "steps": INTEGER,
        "history": listing(EPOCH),
    }
)
COUNTS = ("found", "skipped", "reused", "indexed", "to_extract", "uploaded", "done", "failed")
INDEX_JOB = record(
    {
        **JOB_COMMON,
        "kind": {"const": "index"},
        "started": TIME,
        "ended": TIME,
        "submitted_by": STRING,
        "needs_client": BOOLEAN,
        "index": STRING,
        "model": STRING,
        "weights": STRING,
        "source": STRING,
        "shared_fs": BOOLEAN,
        "prune": BOOLEAN,
        "chunk": INTEGER,
        "engine": maybe("string"),
        **{name: INTEGER for name in COUNTS},
        "failures": listing(record({"path": STRING, "error": STRING})),
        "pruned": INTEGER,
        "rate": {**maybe("number"), "description": "images a second"},
        "notes": listing(STRING),
    }
)

QUERY_FORM = record(
    {},
    {
        "file": {**STRING, "contentMediaType": "application/octet-stream"},
        "path": {**STRING, "description": "an image the index holds, instead of `file`"},
        "text": {
            **STRING,
            "description": "words to search by, instead of an image (an index of a CLIP model)",
        },
        "add": {**STRING, "description": "words that move an image query towards them (CLIP)"},
        "subtract": {**STRING, "description": "words that move an image query away (CLIP)"},
        "index": STRING,
        "top": {**INTEGER, "minimum": 1, "maximum": 1000, "default": 5},
        "metric": {"enum": ["cosine", "euclidean"], "default": "cosine"},
        "plain": {**BOOLEAN, "description": "plain cosine, no ranking options"},
        "min_score": {**NUMBER, "minimum": -1, "maximum": 1},
    },
)
LIBRARY_PARAMS = [
    query_param("path", "a path the index holds", STRING, required=True),
    query_param("index", "default: the server's (`GET /api/defaults`)", STRING),
]
LIBRARY_MISSING = failure("the index holds no such path, or its file cannot be read")

PATHS = {
    "/api/query": {
        "post": {
            "operationId": "query",
            "summary": "The index's images most like a query image or words: `cbirq query --json`",
            "description": 'An uploaded `file`, or `path`, an image the index holds ("more '
            'like this": it is left out of its own results, the top k filled from the rest), '
            "or `text` for an index of a CLIP model.",
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": QUERY_FORM}},
            },
            "responses": {
                "200": answer("the ranked results, best first", ref("QueryAnswer")),
                "400": failure(
                    "not an image, a bad option, or words for a model without a text tower"
                ),
                "404": failure("no such index, or no such path in it"),
                "408": failure("the upload was too slow"),
                "413": failure("the upload was too large"),
                "503": failure("too many uploads at once, or Redis or the workers unreachable"),
            },
        }
    },
    "/api/indexes": {
        "get": {
            "operationId": "indexes",
            "summary": "Every index, with its model and image count: `cbirq indexes --json`",
            "responses": {"200": answer("the indexes", listing(ref("Index")))},
        }
    },
    "/api/defaults": {
        "get": {
            "operationId": "defaults",
            "summary": "What a request that names no index gets",
            "responses": {
                "200": answer("the index of `cbirq serve --index`", record({"index": STRING}))
            },
        }
    },
    "/api/jobs": {
        "get": {
            "operationId": "jobs",
            "summary": "The 50 most recent jobs of every kind, newest first: `cbirq jobs --json`",
            "responses": {"200": answer("job records", listing(ref("Job")))},
        }
    },
    "/api/jobs/{job}": {
        "get": {
            "operationId": "job",
            "summary": "One job's record: `cbirq status JOB --json`",
            "parameters": [
                {
                    "name": "job",
                    "in": "path",
                    "required": True,
                    "description": "the job's id, or any unique start of it",
                    "schema": STRING,
                }
            ],
            "responses": {
                "200": answer("the job record", ref("Job")),
                "404": failure("no such job"),
            },
        }
    },
    "/api/thumb": {
        "get": {
            "operationId": "thumb",
            "summary": "A JPEG thumbnail of an image the index holds",
            "parameters": [
                *LIBRARY_PARAMS,
                query_param(
                    "size",
                    "served at the first of 64, 128, 256, 512, 1024 px that is at least this",
                    {**INTEGER, "minimum": 1, "maximum": 1024, "default": 256},
                ),
            ],
            "responses": {
                "200": {
                    "description": "the thumbnail",
                    "content": {"image/jpeg": {"schema": {**STRING, "format": "binary"}}},
                },
                "400": failure("a bad size"),
                "404": LIBRARY_MISSING,
            },
        }
    },
    "/api/image": {
        "get": {
            "operationId": "image",
            "summary": "The original file of an image the index holds",
            "parameters": LIBRARY_PARAMS,
            "responses": {
                "200": {
                    "description": "the file as it is on disk, typed by its name",
                    "content": {"image/*": {"schema": {**STRING, "format": "binary"}}},
                },
                "404": LIBRARY_MISSING,
            },
        }
    },
}

OPENAPI: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "cbirq",
        "version": "1",
        "description": 'Search by image. Errors are `{"error": "one line"}`; with '
        "CBIRQ_SERVE_TOKEN set, every request needs the token (401 otherwise).",
    },
    "paths": PATHS,
    "components": {
        "schemas": {
            "QueryAnswer": QUERY_ANSWER,
            "Index": INDEX,
            "Job": {"oneOf": [TRAIN_JOB, INDEX_JOB]},
            "Error": record({"error": STRING}),
        },
        "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
    },
    # No token, or the token: the server is run with or without one.
    "security": [{}, {"token": []}],
}
