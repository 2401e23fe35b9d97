#!/usr/bin/env bash
# One set-up step for the demo and the tests: creates .venv, installs the ROS 2 wheels and the
# pinned dependencies, builds the cloudseg messages (and, without a ROS install, the viewer
# message packages in interfaces/) and installs the package; when
# ../shared/wheels exists, also the ROS 2 launch packages (`ros2 launch` without a ROS install).
# Idempotent: a second run only rebuilds what changed. Quiet on success.
#
#   scripts/setup.sh            PyTorch by host (scripts/torch_build): a host with an NVIDIA driver
#                               gets the CUDA build, any other the small CPU wheel
#   scripts/setup.sh --cuda     the CUDA 13 build of the pinned torch from the package registry,
#                               checked on the GPU afterwards (NVIDIA driver 580.65.06 or newer)
#   scripts/setup.sh --cpu      the CPU build, even on a GPU host
#   scripts/setup.sh --triton   only the Triton server's environment, .venv-triton (below)
#   scripts/setup.sh --no-triton  skip .venv-triton
#
# It also creates .venv-triton (scripts/setup_triton.sh): the environment `cloudseg serve` runs
# its Triton server in (nvidia-pytriton pins numpy<2, .venv has numpy 2). Once: ~1 min and
# ~1.3 GB here (a second PyTorch); afterwards a no-op.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
torch_flag=()  # --cuda / --cpu: forced; none: scripts/torch_build decides by the host
triton=yes
triton_only=no
for arg in "$@"; do
  case "$arg" in
    --cuda|--cpu) torch_flag=("$arg") ;;
    --triton) triton_only=yes ;;
    --no-triton) triton=no ;;
    *) echo "setup: unknown option $arg (--cuda, --cpu, --triton, --no-triton)" >&2; exit 2 ;;
  esac
done
if [[ "$triton_only" == yes ]]; then
  exec "$root/scripts/setup_triton.sh" "${torch_flag[@]}"
fi
log=$(mktemp -t cloudseg-setup.XXXXXX)
trap 'rm -f "$log"' EXIT

fail() {
  echo "setup: $1 failed; the last lines of its output:" >&2
  tail -n 25 "$log" >&2
  echo "setup: full log kept at $log.kept" >&2
  cp "$log" "$log.kept"
  exit 1
}

step() {  # step NAME CMD...: run quietly, show the log only on failure
  local name=$1; shift
  "$@" >"$log" 2>&1 || fail "$name"
}

command -v python3 >/dev/null || { echo "setup: python3 (3.10+) is required" >&2; exit 1; }
[[ -x "$venv/bin/python" ]] || step "creating $venv" python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# CMake builds below (messages, composition_interfaces) find the ROS wheels' CMake packages in
# the venv, after any sourced ROS install's
export CMAKE_PREFIX_PATH="${CMAKE_PREFIX_PATH:+$CMAKE_PREFIX_PATH:}$venv"
torch_build="$root/scripts/torch_build"
torch_mode=$(python3 "$torch_build" mode "${torch_flag[@]}")

# Dependencies: reinstalled only when requirements.txt, the torch pin or the build (cpu/cuda)
# changed. A switch of build really reinstalls torch (torch_build's requirements exclude each
# other); on CUDA the GPU is checked before the stamp is written, so a failed check reruns.
deps_stamp="$venv/.cloudseg-deps"
deps_key=$(cat "$root/requirements.txt" "$torch_build"; echo "torch build: $torch_mode")
if [[ ! -f "$deps_stamp" || "$(cat "$deps_stamp")" != "$deps_key" ]]; then
  step "installing PyTorch ($torch_mode build)" "$venv/bin/python" "$torch_build" install \
    "$torch_mode" "$venv/bin/python"
  step "installing the ROS 2 wheels and dependencies" "${pip[@]}" install -r "$root/requirements.txt"
  if [[ "$torch_mode" == cuda ]]; then  # one line: CUDA version and GPU, or why not
    "$venv/bin/python" "$torch_build" check cuda || exit 1
  fi
  printf '%s' "$deps_key" >"$deps_stamp"
fi

# The ROS 2 launch packages (`ros2 launch` without a ROS install), when ../shared/wheels is there
# (see its README; CLOUDSEG_LAUNCH_WHEELS=<dir> names another folder, an empty value skips them).
# A ROS install brings its own. Reinstalled only when the wheels or composition_interfaces changed.
wheels=${CLOUDSEG_LAUNCH_WHEELS-"$root/../shared/wheels"}
if [[ -n "$wheels" && -d "$wheels/composition_interfaces-src" ]] && compgen -G "$wheels/*.whl" >/dev/null; then
  launch_stamp="$venv/.cloudseg-launch"
  launch_key=$(cd "$wheels" && find ./*.whl composition_interfaces-src -type f -print0 | sort -z \
    | xargs -0 sha256sum | sha256sum)
  if [[ ! -f "$launch_stamp" || "$(cat "$launch_stamp")" != "$launch_key" ]]; then
    step "installing the launch wheels' dependencies" \
      "${pip[@]}" install osrf-pycommon==2.0.2 packaging psutil
    # --no-deps: launch_ros asks for `ament_index_python` (here ros-ament-index-python), and
    # PyPI's unrelated `launch` must never be resolved
    step "installing the ROS 2 launch wheels" "${pip[@]}" install --no-deps "$wheels"/*.whl
    step "building composition_interfaces (needed by launch_ros)" \
      "${pip[@]}" install --no-build-isolation --no-deps "$wheels/composition_interfaces-src"
    step "checking the launch packages" "$venv/bin/python" -c \
      "import launch, launch_ros.actions, ros2launch.api, composition_interfaces.srv"
    printf '%s' "$launch_key" >"$launch_stamp"
  fi
fi

# `ros2 launch`, `ros2 interface`, ... find packages through AMENT_PREFIX_PATH, which nothing sets
# without a sourced ROS install: a .pth file (run by every Python of the venv at start-up, as
# ros_wheels_bootstrapper's sets LD_LIBRARY_PATH) appends the venv when it is missing, so
# `.venv/bin/ros2 launch cloudseg ...` works as is, activated or not.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cmp -s "$root/scripts/cloudseg_ament_prefix.pth" "$site/cloudseg_ament_prefix.pth" \
  || cp "$root/scripts/cloudseg_ament_prefix.pth" "$site/"

# The viewer message packages (foxglove_msgs, ffmpeg_image_transport_msgs, vision_msgs; see
# interfaces/README.md): built from interfaces/ unless a ROS install already provides them.
# Rebuilt only when interfaces/ changed.
ifaces_stamp="$venv/.cloudseg-interfaces"
ifaces_key=$(cd "$root" && find interfaces -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
if [[ ! -f "$ifaces_stamp" || "$(cat "$ifaces_stamp")" != "$ifaces_key" ]]; then
  for dir in "$root"/interfaces/*/; do
    name=$(basename "$dir")
    [[ -f "$dir/package.xml" ]] || continue
    if [[ ! -f "$ifaces_stamp" ]] && (cd / && "$venv/bin/python" -c "import $name.msg" 2>/dev/null); then
      continue  # provided by a sourced ROS install
    fi
    step "building the $name messages" \
      "${pip[@]}" install --no-build-isolation --no-deps --force-reinstall "$dir"
  done
  step "checking the viewer messages" "$venv/bin/python" -c "from foxglove_msgs.msg import \
CompressedVideo; from ffmpeg_image_transport_msgs.msg import FFMPEGPacket; \
from vision_msgs.msg import LabelInfo"
  printf '%s' "$ifaces_key" >"$ifaces_stamp"
fi

# The package (messages + code): rebuilt only when its sources changed.
pkg_stamp="$venv/.cloudseg-pkg"
pkg_key=$(cd "$root" && find CMakeLists.txt package.xml pyproject.toml msg src launch config scripts weights interfaces/cmake \
  -type f -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum)
if [[ ! -f "$pkg_stamp" || "$(cat "$pkg_stamp")" != "$pkg_key" ]]; then
  step "building the cloudseg messages and installing the package" \
    "${pip[@]}" install --no-build-isolation --no-deps --force-reinstall "$root"
  step "checking the installed package" "$venv/bin/python" -c \
    "import rclpy, torch, av, cv2, rosbags; from cloudseg.msg import Frame, Knob; import cloudseg.cli"
  printf '%s' "$pkg_key" >"$pkg_stamp"
fi

# The Triton server's environment (cloudseg serve; the Triton tests skip without it).
if [[ "$triton" == yes ]]; then
  "$root/scripts/setup_triton.sh" "--$torch_mode"
fi
