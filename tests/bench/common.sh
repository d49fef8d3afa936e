# shellcheck shell=bash
# common.sh - how every bench script starts, sourced first with the
# script's arguments: repo (this checkout), build (argument 1, default
# build; relative to the repo), PY, and lab (deploy/lab, for the scripts
# that bring up nodes).
# shellcheck disable=SC2034 # the sourcing script uses them

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-build}
case $build in
/*) ;;
*) build="$repo/$build" ;;
esac
PY=/usr/bin/python3
lab="$repo/deploy/lab"
