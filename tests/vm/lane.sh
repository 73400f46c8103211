#!/usr/bin/env bash
# The real-kernel lane: boots QEMU guests with real VFIO/iommufd kernels and
# runs the guest test binaries there. See docs/VM-LANE.md.
#   bash tests/vm/lane.sh [--boot default|compat|nommu]... [-p PACKAGE]... [--release] [--fail-demo]
set -euo pipefail
exec python3 "$(dirname "${BASH_SOURCE[0]}")/lane.py" "$@"
