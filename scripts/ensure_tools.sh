#!/usr/bin/env bash
# Install the optional test tools from Debian (nginx-light for `nginx -t` and the nginx test,
# prometheus for `promtool check rules`, chromium for the browser tests) when running as root
# with apt; otherwise do nothing: the tests that need them are skipped with the reason.
set -uo pipefail

missing=()
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
((${#missing[@]})) || exit 0
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    exit 0
fi
echo "ensure_tools: installing ${missing[*]}" >&2
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; }
# A machine whose package lists are missing or stale needs one update first.
install || { apt-get update -qq >/dev/null 2>&1 && install; } ||
    echo "ensure_tools: could not install ${missing[*]}; their tests will be skipped" >&2
exit 0
