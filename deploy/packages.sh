# deploy/packages.sh — sourced by deploy/test and deploy/dev-cluster.
#
# ensure_packages PKG... installs the Debian packages that are not
# installed (as root, through apt-get), or names them and fails. A package
# counts as present only when dpkg says it is installed: a file that
# another package happens to ship (libclang-cpp.so for libclang-dev, say)
# proves nothing.
#
# build_workspace builds every binary and test of the workspace once, with
# one feature set, so that whichever of the two commands runs first, the
# other finds it built.

deb_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

ensure_packages() {
  local missing=() p
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "warning: not a Debian system; make sure these are installed: $*" >&2
    return 0
  fi
  for p in "$@"; do deb_installed "$p" || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing packages: ${missing[*]} (install them, or run as root on Debian)" >&2
    return 1
  fi
}

# What building the workspace needs: protoc for the .proto files, libclang
# for RocksDB's bindings.
BUILD_PACKAGES=(protobuf-compiler libclang-dev)

# The one build both commands share: release, all binaries and tests.
build_workspace() {
  echo "==> cargo build (release, the whole workspace with its tests)"
  cargo test --release --workspace --no-run
}
