"""The image's HEALTHCHECK: exit 0 when this worker's `GET /health/live` answers 200, else 1.

Liveness only (the process and its event loop answer): whether the worker should get new calls is
`/health/ready`, which the load balancer asks. Standard library only, so the image needs no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0  # below the HEALTHCHECK's --timeout


def main() -> int:
    port = os.environ.get("VOXGATE_PORT", "8600")
    url = f"http://127.0.0.1:{port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # a fixed loopback URL
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
