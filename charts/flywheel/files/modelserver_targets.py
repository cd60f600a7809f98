"""The Prometheus of the chart's metricsAdapter: writes the release's model-server pods as file_sd
targets labelled with their pod and namespace (the labels the adapter maps to the HPA's pods), every
INTERVAL_S. A sidecar because Debian's Prometheus is built without kubernetes_sd. Standard library
only: it runs in the chart's gateway image."""

import json
import os
import ssl
import time
import urllib.parse
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def targets(url: str, context: ssl.SSLContext, namespace: str, port: str) -> list[dict]:
    with open(f"{SA}/token") as fh:  # re-read: the kubelet rotates it
        token = fh.read().strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context, timeout=10) as resp:
        pods = json.load(resp)["items"]
    found = []
    for p in pods:
        if p.get("status", {}).get("podIP") and p["status"].get("phase") == "Running":
            labels = {"namespace": namespace, "pod": p["metadata"]["name"]}
            found.append({"targets": [f"{p['status']['podIP']}:{port}"], "labels": labels})
    return found


def main() -> None:
    with open(f"{SA}/namespace") as fh:
        namespace = fh.read().strip()
    out, port, every = os.environ["TARGETS_FILE"], os.environ["TARGET_PORT"], float(os.environ["INTERVAL_S"])
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    host = f"[{host}]" if ":" in host else host
    query = urllib.parse.urlencode({"labelSelector": os.environ["POD_SELECTOR"]})
    url = f"https://{host}:{os.environ['KUBERNETES_SERVICE_PORT']}/api/v1/namespaces/{namespace}/pods?{query}"
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    while True:
        try:
            found = targets(url, context, namespace, port)
            with open(out + ".tmp", "w") as fh:
                json.dump(found, fh)
            os.replace(out + ".tmp", out)  # Prometheus never reads half a file
        except (OSError, ValueError, KeyError) as exc:
            print(f"model-server targets: {exc}", flush=True)  # the last good file stays
        time.sleep(every)


if __name__ == "__main__":
    main()
