"""An OpenAI-compatible gateway in front of an `AsyncClient` (extra `gateway`).

```python
from baiduwx_async.gateway import create_app

app = create_app(client, {"ernie": "chat:completions", "bge": "embeddings:bge_large_zh"},
                 api_keys=["sk-team-1"])
```

The app answers `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`,
`GET /v1/models` and `GET /healthz` in OpenAI's shapes, so the `openai` package, LangChain
and the other tools that speak OpenAI's API can use Wenxin deployments through one client:
one access token, one rate limit, the client's retries. `baiduwx serve` runs it.
"""

from ._app import DEFAULT_MAX_BODY_BYTES, GatewayApp, ModelRoute, create_app, parse_models
from ._errors import GatewayError
from ._server import serve

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "GatewayApp",
    "GatewayError",
    "ModelRoute",
    "create_app",
    "parse_models",
    "serve",
]
