"""Play rendered Kubernetes manifests on the local Docker engine, pod spec by pod spec.

No cluster runs on these machines, so this starts each workload's pods as real containers from
exactly their rendered specs (image, command, args, env, volumes, security context, init
containers, probes, resources) and emulates what a kubelet and a Service would do around them.
What it does not emulate is listed in k8s/README.md ("Smoke test on Docker").

    manifests.py   the objects: ConfigMaps, Secrets, Services, workloads; env and quantities
    translate.py   a pod spec -> the docker container settings (pure, tested offline)
    runtime.py     pods as containers: restarts with back-off, probes, Service endpoints
"""
