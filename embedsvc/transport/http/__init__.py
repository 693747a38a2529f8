"""The API over HTTP/1.1 and JSON, on its own port: the Connect protocol's unary and server-streaming calls
(`connect.py`), an OpenAPI description (`openapi.py`) and the explorer's static pages, in one Starlette app (`app.py`)
run by uvicorn in a thread (`server.py`).

Every call is transcoded and sent to this server's own gRPC service over a private Unix socket (`upstream.py`), so it
passes the same interceptor as a gRPC call (API keys and roles, admission control, deadlines, limits, metrics, audit)
and reaches the same servicers: nothing here re-implements the API, and the Connect routes are built from the table
of services, so a new RPC is reachable over HTTP the moment it exists. Other HTTP dialects are route modules beside
`connect.py`, registered in `app.ROUTE_MODULES`: OpenAI's embeddings API (`openai.py`) and text-embeddings-inference's
(`tei.py`).
"""

from embedsvc.transport.http.connect import api_methods
from embedsvc.transport.http.server import HttpServer, private_socket

__all__ = ["HttpServer", "api_methods", "private_socket"]
