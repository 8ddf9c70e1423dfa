"""Every AWS name the pipeline uses, from one prefix, and what `pipeline up` was asked for."""

from __future__ import annotations

from dataclasses import dataclass

from rendezvous_deploy.pipeline import DEFAULT_PREFIX


@dataclass(frozen=True)
class PipelineNames:
    """Every AWS resource name, derived from one prefix."""

    prefix: str = DEFAULT_PREFIX

    @property
    def initialize(self) -> str:
        return f"{self.prefix}-initialize"

    @property
    def worker(self) -> str:
        return f"{self.prefix}-worker"

    @property
    def summarize(self) -> str:
        return f"{self.prefix}-summarize"

    @property
    def layer(self) -> str:
        return f"{self.prefix}-fmi-client"

    @property
    def lambda_role(self) -> str:
        return f"{self.prefix}-lambda"

    @property
    def initialize_role(self) -> str:
        """Initialize's own role: the Lambda role's rights plus reading the server's auth
        secret, which the workers (running users' scripts) must not have."""
        return f"{self.prefix}-initialize"

    @property
    def states_role(self) -> str:
        return f"{self.prefix}-states"

    @property
    def state_machine(self) -> str:
        return self.prefix

    @property
    def repository(self) -> str:
        return f"{self.prefix}-worker"

    def functions(self) -> tuple[str, str, str]:
        return (self.initialize, self.worker, self.summarize)


@dataclass(frozen=True)
class UpSettings:
    names: PipelineNames
    image_uri: str | None = None  # None: build and push examples/pipeline/Dockerfile
    worker_memory_mb: int = 3008
    worker_timeout_s: int = 900
    small_memory_mb: int = 512
    small_timeout_s: int = 120  # the users' 3 s default killed Initialize
    # s3://bucket/prefix the functions only read (data, model, script) or read and write
    # (results). See s3_access; nothing given is an error unless any_bucket is set.
    read_locations: tuple[str, ...] = ()
    write_locations: tuple[str, ...] = ()
    any_bucket: bool = False
    # The `server up --name` whose auth secret Initialize mints credentials from; with
    # auth off, ranks meet a server that needs no credential.
    server_name: str = "rendezvous"
    auth: bool | None = None  # None: when the server has a secret; True: it must
