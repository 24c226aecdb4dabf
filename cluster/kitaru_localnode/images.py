"""The images the local node runs, built here without a registry or a Docker engine.

- base: a Debian bookworm root file system made by mmdebstrap from the Debian archive
  apt already uses (python3, its venv module, CA certificates), imported into buildah;
- pause: the pod sandbox's program (cluster/go/pause, built by build.sh) alone in an image;
- oauth2-proxy (the security tier's, on demand: `kitaru_localnode.authproxy`): the static
  binary `build.sh authproxy` makes, alone in an image;
- runner and operator: the project's own Dockerfiles built by buildah with the base as
  the BASE build argument (the same files build with `docker build` on the public base).

Each image is keyed by a content hash of its inputs and exported once as an OCI archive
into the cache; `python -m kitaru_localnode.images` builds what is missing and prints the
manifest (name -> reference, digest, archive) that the cluster imports into containerd.
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


@dataclass(frozen=True)
class DockerfileImage:
    name: str
    dockerfile: str
    repository: str


PROJECT_IMAGES = [
    DockerfileImage("runner", "cli/Dockerfile.runner", "ghcr.io/kitaru-k8s/runner"),
    DockerfileImage("operator", "operator/Dockerfile", "ghcr.io/kitaru-k8s/operator"),
]


@dataclass(frozen=True)
class BuiltImage:
    """One image in the cache: `ref` is what containerd names it, `archive` its OCI file."""

    ref: str
    digest: str
    archive: str

    @property
    def pinned(self) -> str:
        """The reference pinned by digest: repository@sha256:..."""
        return f"{self.ref.rsplit(':', 1)[0]}@{self.digest}"


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

    def _from_scratch(self, what: str, ref: str, files: list[str], config: list[str]) -> None:
        """Commit `ref`: an empty image, `buildah add|copy` of the files, its configuration."""
        container = self._run(f"{what} container", [*self.buildah, "from", "scratch"]).split()[-1]
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
            self._from_scratch(
                "base",
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
            self._from_scratch(
                "pause",
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
            self._from_scratch(
                "oauth2-proxy",
                ref,
                ["copy", str(binary), "/oauth2-proxy"],
                ['--entrypoint=["/oauth2-proxy"]', "--user=65532:65532"],
            )
        return self._export("oauth2-proxy", ref, key)

    def project(self, image: DockerfileImage, base: str, tag: str) -> BuiltImage:
        dockerfile = self.checkout / image.dockerfile
        text = dockerfile.read_text()
        ignore_file = self.checkout / ".dockerignore"
        ignore = dockerignore_patterns(ignore_file.read_text()) if ignore_file.exists() else []
        key = tree_hash(self.checkout, copy_sources(text), ignore, text, base, tag)
        ref = f"{image.repository}:{tag}"
        if not (self.dir / f"{image.name}-{key}.json").exists():
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
                    f"--tag={ref}",
                    str(self.checkout),
                ],
            )
            # The archive is per key, not per tag: drop a stale record of the same tag.
            (self.dir / f"{image.name}-{key}.oci.tar").unlink(missing_ok=True)
        return self._export(image.name, ref, key)


def project_version(checkout: Path) -> str:
    for line in (checkout / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split("=", 1)[1].strip().strip('"')
    raise ImageBuildError("no version in pyproject.toml")


def build_all(
    bin_dir: Path, cache: Path | None = None, checkout: Path = CHECKOUT
) -> dict[str, BuiltImage]:
    """Every image the node needs, built or taken from the cache.

    One build at a time per cache: checkouts share it, and two builds of the same tag
    from different trees would otherwise export each other's image under their key.
    """
    builder = Builder(cache or cache_dir(), checkout, bin_dir)
    with (builder.dir / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        images = {"pause": builder.pause()}
        base = builder.base()
        tag = project_version(checkout)
        for image in PROJECT_IMAGES:
            images[image.name] = builder.project(image, base, tag)
    return images


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
        images = build_all(args.bin_dir)
    except ImageBuildError as err:
        print(f"image build failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps({n: {**asdict(i), "pinned": i.pinned} for n, i in images.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
