#!/usr/bin/env python3
"""Exchanges an agent's workload JWT for a Writ credential with authlib.

The RFC 8693 client of Writ's token endpoint tests: authlib's requests
OAuth2Session builds the token request and parses the response, so the
test sees what an ordinary OAuth client library makes of Writ's answers.
One JSON request per stdin line, one JSON result per stdout line.
"""

import json
import sys

import authlib
from authlib.integrations.requests_client import OAuth2Session, OAuthError

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def exchange(url, params):
    """One token request; what authlib returned or raised, and the raw answer.

    The grant type is token exchange unless params name another.
    """
    seen = {}
    grant_type = params.pop("grant_type", TOKEN_EXCHANGE)

    def keep(response):
        seen["status"] = response.status_code
        seen["cache_control"] = response.headers.get("Cache-Control")
        seen["pragma"] = response.headers.get("Pragma")
        try:
            seen["body"] = response.json()
        except ValueError:
            seen["body"] = response.text
        return response

    # A public client: no client secret, so authlib authenticates with
    # method "none" (client_id in the body, which Writ ignores).
    with OAuth2Session(client_id="writ-test-agent", token_endpoint_auth_method="none") as session:
        session.register_compliance_hook("access_token_response", keep)
        try:
            token = session.fetch_token(url, grant_type=grant_type, timeout=30, **params)
        except OAuthError as error:
            return {"error": error.error, "description": error.description, **seen}
        return {"token": dict(token), **seen}


def main():
    url = sys.argv[1]
    print(json.dumps({"ready": True, "authlib": authlib.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip():
            request = json.loads(line)
            print(json.dumps(exchange(url, request["params"])), flush=True)


if __name__ == "__main__":
    main()
