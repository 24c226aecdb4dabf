"""The images the local node runs, built here without a Docker engine.

- base: a Debian bookworm root file system made by mmdebstrap from the Debian archive
  apt already uses (python3, its venv module, CA certificates), imported into buildah;
- pause: the pod sandbox's program (cluster/go/pause, built by build.sh) alone in an
  image, exported as an OCI archive that containerd imports (the sandbox of every pod,
  the registry's included, needs it before anything can be pulled);
- oauth2-proxy (the security tier's, on demand: `kitaru_localnode.authproxy`): the static
  binary `build.sh authproxy` makes, alone in an image;
- runner and operator: the project's own Dockerfiles built by buildah with the base as
  the BASE build argument (the same files build with `docker build` on the public base);
- versitygw: the local cluster's S3 store (built by build.sh) on the base.

Each image is keyed by a content hash of its inputs and built once per key into buildah's
storage, named `localhost/kitaru-<name>:<key>` so that checkouts sharing the storage
never overwrite each other's. The cluster pushes the last three to its registry
(`push`), from where the node pulls them; `python -m kitaru_localnode.images` builds
what is missing and prints what it has.
"""

from __future__ import annotations

import argparse
import fcntl
import fnmatch
import hashlib
import json
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from kitaru_localnode.paths import CHECKOUT, cache_dir

BASE_SUITE = "bookworm"
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates", "passwd"]
# Documentation, manuals and translations are of no use in a container.
BASE_DPKG_OPTIONS = [
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
]
APT_SOURCES = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
# The host's pip settings and CA bundle, visible to the build steps but never stored in
# an image, so a build behind a TLS-intercepting proxy works as `pip install` does here.
BUILD_MOUNTS = [Path("/etc/pip.conf"), Path("/etc/ssl/certs/ca-certificates.crt")]
PAUSE_REF = "kitaru.local/pause"
AUTH_PROXY_REF = "kitaru.local/oauth2-proxy"
VERSIONS_FILE = Path(__file__).resolve().parents[1] / "versions.env"
STORE_USER = "10001:10001"
STORE_PORT = 7070


@dataclass(frozen=True)
class DockerfileImage:
    """A project image: `path` is its repository without a registry host (the local
    registry holds it there, as ghcr.io does; node.MIRRORED_REGISTRY)."""

    name: str
    dockerfile: str
    path: str


PROJECT_IMAGES = [
    DockerfileImage("runner", "cli/Dockerfile.runner", "kitaru-k8s/runner"),
    DockerfileImage("operator", "operator/Dockerfile", "kitaru-k8s/operator"),
]
STORE_PATH = "kitaru-k8s/versitygw"


@dataclass(frozen=True)
class LocalImage:
    """An image in buildah's storage under `local` (unique per content key), to be
    published as `<registry>/<path>:<tag>`."""

    name: str
    local: str
    path: str
    tag: str


@dataclass(frozen=True)
class BuiltImage:
    """An image the node has: `ref` is what containerd names it; `archive` the OCI file it
    is imported from, or empty when the node pulls it from the registry."""

    ref: str
    digest: str
    archive: str = ""

    @property
    def pinned(self) -> str:
        """The reference pinned by digest: repository@sha256:..."""
        return f"{self.ref.rsplit(':', 1)[0]}@{self.digest}"


@dataclass(frozen=True)
class Built:
    """What `build_all` made: the pause image to import, and the images to push."""

    pause: BuiltImage
    pushed: dict[str, LocalImage]


class ImageBuildError(Exception):
    """A build step failed; the message names it and carries its output's tail."""


# --- pure helpers ------------------------------------------------------------


def copy_sources(dockerfile_text: str) -> list[str]:
    """The build-context paths a Dockerfile copies (COPY without --from), in order."""
    sources: list[str] = []
    for line in dockerfile_text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "COPY":
            continue
        args = words[1:]
        if any(a.startswith("--from") for a in args):
            continue
        sources += [a for a in args if not a.startswith("--")][:-1]
    return sources


def ignored(relpath: str, patterns: Iterable[str]) -> bool:
    """Whether a .dockerignore pattern excludes the path or one of its parent folders."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def dockerignore_patterns(text: str) -> list[str]:
    return [
        line.strip().rstrip("/")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def tree_hash(root: Path, sources: Iterable[str], ignore: list[str], *extra: str) -> str:
    """sha256 over the files under `sources` (relative to root): paths and contents."""
    digest = hashlib.sha256()
    for part in extra:
        digest.update(part.encode() + b"\0")
    files: list[str] = []
    for source in sources:
        path = root / source
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [c.relative_to(root).as_posix() for c in candidates]
    for rel in sorted(set(files)):
        if not ignored(rel, ignore):
            digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def pinned_version(name: str, versions: Path = VERSIONS_FILE) -> str:
    """A version pinned in cluster/versions.env (NAME=value)."""
    for line in versions.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    raise ImageBuildError(f"{versions} pins no {name}")


def oci_archive_digest(archive: Path) -> str:
    """The manifest digest recorded in an OCI archive's index.json."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None, f"{archive} has no index.json"
        index = json.load(member)
    digest: str = index["manifests"][0]["digest"]
    return digest


# --- the builder -------------------------------------------------------------


class Builder:
    """Builds into `<cache>/images` with buildah's own storage under `<cache>/buildah`."""

    def __init__(self, cache: Path, checkout: Path, bin_dir: Path) -> None:
        self.dir = cache / "images"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkout = checkout
        self.bin_dir = bin_dir
        storage = cache / "buildah"
        self.buildah = [
            "buildah",
            f"--root={storage / 'storage'}",
            f"--runroot={storage / 'run'}",
            "--storage-driver=overlay",
        ]

    def _run(self, step: str, argv: list[str]) -> str:
        print(f"images: {step}", file=sys.stderr, flush=True)
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-30:])
            raise ImageBuildError(f"step '{step}' failed ({shlex.join(argv)}):\n{tail}")
        return proc.stdout

    def _has_image(self, ref: str) -> bool:
        proc = subprocess.run(
            [*self.buildah, "inspect", "--type=image", ref], capture_output=True, text=True
        )
        return proc.returncode == 0

    def push(self, image: LocalImage, registry: str) -> BuiltImage:
        """Push the image to `registry` (plain HTTP) as `<registry>/<path>:<tag>`."""
        ref = f"{registry}/{image.path}:{image.tag}"
        with tempfile.TemporaryDirectory() as tmp:
            digest_file = Path(tmp) / "digest"
            self._run(
                f"push {image.name} to {registry}",
                [
                    *self.buildah,
                    "push",
                    "--quiet",
                    "--tls-verify=false",
                    f"--digestfile={digest_file}",
                    image.local,
                    f"docker://{ref}",
                ],
            )
            digest = digest_file.read_text().strip()
        return BuiltImage(ref=ref, digest=digest)

    def _export(self, name: str, ref: str, key: str) -> BuiltImage:
        """The image's OCI archive in the cache, written once per key."""
        record = self.dir / f"{name}-{key}.json"
        if record.exists():
            return BuiltImage(**json.loads(record.read_text()))
        archive = self.dir / f"{name}-{key}.oci.tar"
        archive.unlink(missing_ok=True)
        self._run(
            f"export {ref}",
            [
                *self.buildah,
                "push",
                "-q",
                "--disable-compression",
                ref,
                f"oci-archive:{archive}:{ref}",
            ],
        )
        built = BuiltImage(ref=ref, digest=oci_archive_digest(archive), archive=str(archive))
        record.write_text(json.dumps(asdict(built), indent=2) + "\n")
        return built

    def _assemble(
        self, what: str, start: str, ref: str, files: list[str], config: list[str]
    ) -> None:
        """Commit `ref`: the image `start` (or scratch), `buildah add|copy` of the files,
        its configuration."""
        container = self._run(f"{what} container", [*self.buildah, "from", start]).split()[-1]
        try:
            self._run(f"{what} files", [*self.buildah, files[0], container, *files[1:]])
            self._run(f"{what} configuration", [*self.buildah, "config", *config, container])
            self._run(f"{what} commit", [*self.buildah, "commit", "-q", container, ref])
        finally:
            subprocess.run([*self.buildah, "rm", container], capture_output=True)

    def base(self) -> str:
        """The buildah reference of the Debian base, made with mmdebstrap when missing."""
        sources = next((p for p in APT_SOURCES if p.exists()), None)
        if sources is None:
            raise ImageBuildError(
                "no apt sources (/etc/apt/sources.list[.d]) to build the base from"
            )
        key = hashlib.sha256(
            json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_DPKG_OPTIONS, sources.read_text()]).encode()
        ).hexdigest()[:16]
        ref = f"localhost/kitaru-base:{key}"
        if self._has_image(ref):
            return ref
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            self._run(
                "debian base (mmdebstrap)",
                [
                    "mmdebstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    *(f"--dpkgopt={opt}" for opt in BASE_DPKG_OPTIONS),
                    BASE_SUITE,
                    str(rootfs),
                    str(sources),
                ],
            )
            self._assemble(
                "base",
                "scratch",
                ref,
                ["add", str(rootfs), "/"],
                [
                    "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    '--cmd=["/bin/sh"]',
                ],
            )
        return ref

    def pause(self) -> BuiltImage:
        binary = self.bin_dir / "pause"
        key = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
        ref = f"{PAUSE_REF}:{key}"
        if not (self.dir / f"pause-{key}.json").exists() and not self._has_image(ref):
            self._assemble(
                "pause",
                "scratch",
                ref,
                ["copy", str(binary), "/pause"],
                ['--entrypoint=["/pause"]', "--user=65535:65535"],
            )
        return self._export("pause", ref, key)

    def auth_proxy(self, binary: Path, version: str) -> BuiltImage:
        """oauth2-proxy (a static binary) alone in an image, run as a non-root user."""
        key = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
        ref = f"{AUTH_PROXY_REF}:{version}"
        if not (self.dir / f"oauth2-proxy-{key}.json").exists():
            self._assemble(
                "oauth2-proxy",
                "scratch",
                ref,
                ["copy", str(binary), "/oauth2-proxy"],
                ['--entrypoint=["/oauth2-proxy"]', "--user=65532:65532"],
            )
        return self._export("oauth2-proxy", ref, key)

    def project(self, image: DockerfileImage, base: str, tag: str) -> LocalImage:
        dockerfile = self.checkout / image.dockerfile
        text = dockerfile.read_text()
        ignore_file = self.checkout / ".dockerignore"
        ignore = dockerignore_patterns(ignore_file.read_text()) if ignore_file.exists() else []
        key = tree_hash(self.checkout, copy_sources(text), ignore, text, base, tag)
        built = LocalImage(image.name, f"localhost/kitaru-{image.name}:{key}", image.path, tag)
        if not self._has_image(built.local):
            mounts = [f"--volume={p}:{p}:ro" for p in BUILD_MOUNTS if p.exists()]
            self._run(
                f"{image.name} image (buildah, {image.dockerfile})",
                [
                    *self.buildah,
                    "bud",
                    "--isolation=chroot",
                    "--network=host",
                    "--layers",
                    "-q",
                    *mounts,
                    f"--build-arg=BASE={base}",
                    f"--build-arg=KITARU_VERSION={tag}",
                    f"--file={dockerfile}",
                    f"--tag={built.local}",
                    str(self.checkout),
                ],
            )
        return built

    def store(self, base: str) -> LocalImage:
        """versitygw on the base, as a numeric non-root user: the base gives the pod's
        init container `mkdir`, which makes the bucket (a directory of the posix backend)."""
        binary = self.bin_dir / "versitygw"
        if not binary.exists():
            raise ImageBuildError(f"no versitygw in {self.bin_dir}: run cluster/build.sh")
        version = pinned_version("VERSITYGW_VERSION")
        config = [
            '--entrypoint=["/usr/local/bin/versitygw"]',
            "--cmd=",
            f"--user={STORE_USER}",
            f"--port={STORE_PORT}",
        ]
        key = hashlib.sha256(
            binary.read_bytes() + json.dumps([base, version, config]).encode()
        ).hexdigest()[:16]
        built = LocalImage("versitygw", f"localhost/kitaru-versitygw:{key}", STORE_PATH, version)
        if not self._has_image(built.local):
            self._assemble(
                "versitygw",
                base,
                built.local,
                ["copy", str(binary), "/usr/local/bin/versitygw"],
                config,
            )
        return built


def project_version(checkout: Path) -> str:
    for line in (checkout / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split("=", 1)[1].strip().strip('"')
    raise ImageBuildError("no version in pyproject.toml")


def build_all(bin_dir: Path, cache: Path | None = None, checkout: Path = CHECKOUT) -> Built:
    """Every image the node needs, built or taken from the cache.

    One build at a time per cache: checkouts share it (and the machine's two cores).
    """
    builder = Builder(cache or cache_dir(), checkout, bin_dir)
    with (builder.dir / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pause = builder.pause()
        base = builder.base()
        tag = project_version(checkout)
        pushed = {image.name: builder.project(image, base, tag) for image in PROJECT_IMAGES}
        pushed["versitygw"] = builder.store(base)
    return Built(pause=pause, pushed=pushed)


def build_auth_proxy(binary: Path, version: str, cache: Path | None = None) -> BuiltImage:
    """The oauth2-proxy image, built or taken from the cache (under the build lock)."""
    builder = Builder(cache or cache_dir(), CHECKOUT, binary.parent)
    with (builder.dir / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return builder.auth_proxy(binary, version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kitaru_localnode.images")
    parser.add_argument("--bin-dir", type=Path, required=True, help="where build.sh put pause")
    args = parser.parse_args(argv)
    try:
        built = build_all(args.bin_dir)
    except ImageBuildError as err:
        print(f"image build failed: {err}", file=sys.stderr)
        return 1
    listing = {"pause": asdict(built.pause), **{n: asdict(i) for n, i in built.pushed.items()}}
    print(json.dumps(listing, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
