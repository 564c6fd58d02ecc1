"""A minimal CRI client, doing for one pod what kubelet does: RunPodSandbox
with a runtime handler, CreateContainer, StartContainer, then waits for the
container to exit and prints a JSON summary on stdout.

Used by tests/oci_containerd.rs with Debian's python3-grpcio; the stubs are
generated from tests/cri/api.proto into the directory given as --stubs.

    python3 pod.py --stubs DIR --socket SOCK --handler flint --image IMG
                   --logdir DIR [--arg A ...] [--timeout SECS]
                   [--annotation KEY=VALUE ...] [--get URL]

With --get, the container is a server: instead of waiting for it to exit,
the client GETs URL (retrying while the guest starts), records the answer,
and then stops the pod.
"""

import argparse
import json
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stubs", required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--handler", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--logdir", required=True)
    p.add_argument("--arg", action="append", default=[])
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--annotation", action="append", default=[])
    p.add_argument("--get")
    a = p.parse_args()
    sys.path.insert(0, a.stubs)
    import grpc
    import api_pb2 as api
    import api_pb2_grpc as api_grpc

    channel = grpc.insecure_channel("unix://" + a.socket)
    rt = api_grpc.RuntimeServiceStub(channel)
    deadline = a.timeout

    sandbox_config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="flint-hello", uid="uid-flint-hello", namespace="default", attempt=0),
        log_directory=a.logdir,
        annotations=dict(kv.split("=", 1) for kv in a.annotation),
        # No CNI here: the pod uses the host's network, as --publish does.
        linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.NODE)
            )
        ),
    )
    summary = {}
    pod = rt.RunPodSandbox(
        api.RunPodSandboxRequest(config=sandbox_config, runtime_handler=a.handler), timeout=deadline
    )
    summary["pod_id"] = pod.pod_sandbox_id
    status = rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.pod_sandbox_id), timeout=deadline)
    summary["pod_state"] = api.PodSandboxState.Name(status.status.state)
    container_config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="hello", attempt=0),
        image=api.ImageSpec(image=a.image),
        args=a.arg,
        log_path="hello.log",
    )
    created = rt.CreateContainer(
        api.CreateContainerRequest(
            pod_sandbox_id=pod.pod_sandbox_id, config=container_config, sandbox_config=sandbox_config
        ),
        timeout=deadline,
    )
    cid = created.container_id
    rt.StartContainer(api.StartContainerRequest(container_id=cid), timeout=deadline)
    if a.get:
        summary["get"] = get(a.get, a.timeout)
    end = time.monotonic() + (0 if a.get else a.timeout)
    while True:
        st = rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid), timeout=deadline).status
        if st.state == api.CONTAINER_EXITED or time.monotonic() > end:
            break
        time.sleep(0.05)
    summary["container_state"] = api.ContainerState.Name(st.state)
    summary["exit_code"] = st.exit_code
    summary["log_path"] = st.log_path
    # Like kubelet: tear the pod down.
    rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.pod_sandbox_id), timeout=deadline)
    rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.pod_sandbox_id), timeout=deadline)
    print(json.dumps(summary))


def get(url, timeout):
    """The body of a 200 answer to GET url, retried until timeout; or the
    last error as text."""
    import urllib.request

    # No proxy: the address is this machine's loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    end = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=5) as r:
                return "%d %s" % (r.status, r.read().decode())
        except Exception as e:  # refused while the guest starts
            if time.monotonic() > end:
                return "error: %s" % e
            time.sleep(0.05)


if __name__ == "__main__":
    main()
