#!/usr/bin/env bash
# t-owner: quotas, volume owners and the API's bearer tokens (`vsan quota`,
# `vsan token`, `vsan volume create --owner`) on a standalone vsand,
# through the CLI on the admin socket.
#
#  1. Tokens: create prints one token once (vsan_ID_SECRET); list shows
#     id, identity and creation, never the secret (nor does DATA_DIR);
#     revoke removes it; a second revoke, or an unknown id: exit 19.
#  2. Quotas and owners: a volume created --owner counts against the
#     owner's quota and gives it a read-write grant; a create or a resize
#     past the quota is refused (exit 18) and changes nothing; quota list
#     shows limit and use; `none` removes a quota.
#  3. Owners, quotas and tokens survive a restart; every change is logged
#     once with who made it ("root" on the admin socket).
#  4. Bad input: bad identities, sizes, arguments: precise exit codes.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
vt_config
vsand_start

log "1. tokens"
expect_exit 0 vsan --json token create alice
json_assert 'd["identity"] == "alice" and d["token"].startswith("vsan_" + d["id"] + "_")'
json_assert 'len(d["id"]) == 16 and len(d["token"]) == 86'
TOKEN1=$("$PY" -c 'import json, sys; print(json.load(sys.stdin)["token"])' <<<"$OUT")
ID1=${TOKEN1:5:16}
expect_exit 0 vsan token create "dn:CN=bob,O=Example"
expect_out "shown only now"
TOKEN2=$(tail -n 1 <<<"$OUT")
ID2=${TOKEN2:5:16}
[[ $TOKEN2 =~ ^vsan_[0-9a-f]{16}_[0-9a-f]{64}$ ]] || die "token 2: $TOKEN2"
expect_exit 0 vsan --json token list
json_assert '[(t["id"], t["identity"]) for t in d["tokens"]] == [(a[0], "alice"), (a[1], "dn:CN=bob,O=Example")]' "$ID1" "$ID2"
json_assert 'all(set(t) == {"id", "identity", "created"} for t in d["tokens"])'
expect_exit 0 vsan token list
expect_out "^ID +CREATED +IDENTITY"
expect_out "^$ID1 +[0-9-]+T[0-9:]+Z +alice$"
for secret in "${TOKEN1:22}" "${TOKEN2:22}"; do
    ! grep -rq "$secret" "$DATA" "$LOG" || die "a token's secret is stored or logged"
done
grep -q "^$ID1 " "$DATA/tokens" || die "no token 1 in $DATA/tokens"
expect_exit 0 vsan --json token revoke "$ID1"
json_assert 'd["id"] == a[0] and d["identity"] == "alice"' "$ID1"
expect_exit 19 vsan token revoke "$ID1"
expect_out "no such token"
expect_exit 19 vsan token revoke 0123456789abcdef
expect_exit 0 vsan --json token list
json_assert '[t["id"] for t in d["tokens"]] == [a[0]]' "$ID2"
grep -q "token $ID1 of \"alice\" made by \"root\"" "$LOG" || die "no audit line for the token"
grep -q "token $ID1 of \"alice\" revoked by \"root\"" "$LOG" || die "no audit line for the revoke"

log "2. quotas and owners"
expect_exit 0 vsan quota list
expect_out "no quotas"
expect_exit 0 vsan --json quota set alice 3M
json_assert 'd == {"identity": "alice", "limit": 3145728, "volumes": 64, "changed": True}'
expect_exit 0 vsan quota set alice 3M
expect_out "it was already"
expect_exit 0 vsan --json volume create a1 2M --owner alice
json_assert 'd["owner"] == "alice" and d["size"] == 2097152'
expect_exit 0 vsan volume show a1
expect_out "^owner: +alice$"
expect_exit 0 vsan --json access list a1
json_assert '[(g["identity"], g["mode"]) for g in d["grants"]] == [("alice", "read-write")]'
expect_exit 0 vsan volume create shared 1M
expect_exit 0 vsan --json volume show shared
json_assert '"owner" not in d'
expect_exit 18 vsan volume create a2 2M --owner alice
expect_out 'volume "a2": 2 MiB of "alice" would pass the quota of "alice": 3 MiB .* of which 2 MiB are used'
expect_exit 4 vsan volume show a2
expect_exit 18 vsan volume resize a1 4M
expect_out "would pass the quota"
expect_exit 0 vsan --json volume show a1
json_assert 'd["size"] == 2097152 and d["generation"] == 1'
expect_exit 0 vsan volume resize a1 3M
expect_exit 0 vsan --json quota list
json_assert 'd["quotas"] == [{"identity": "alice", "limit": 3145728, "volumes": 64, "used": 3145728, "used_volumes": 1}]'
expect_exit 0 vsan quota list
expect_out "^3 MiB +3 MiB +64 +1 +alice$"
# A quota also counts volumes.
expect_exit 0 vsan --json quota set bob 1G --volumes 1
json_assert 'd["volumes"] == 1'
expect_exit 0 vsan volume create b1 1M --owner bob
expect_exit 18 vsan volume create b2 1M --owner bob
expect_out 'would pass the quota of "bob": 1 GiB .* in 1 volumes'
expect_exit 4 vsan volume show b2
expect_exit 0 vsan volume delete b1
expect_exit 0 vsan quota set bob none
expect_exit 0 vsan quota set carol 1G
expect_exit 0 vsan --json quota set carol none
json_assert 'd["limit"] == 0 and d["changed"] is True'
expect_exit 0 vsan quota set carol 0
expect_out "there was none"
grep -q 'quota of "alice" set to 3145728 bytes in 64 volumes by "root"' "$LOG" || die "no audit line for the quota"
grep -q 'volume "a1" created by "root": .*owner alice' "$LOG" || die "no audit line for the create"

log "3. across a restart"
vsand_stop TERM
vsand_start
expect_exit 0 vsan --json volume show a1
json_assert 'd["owner"] == "alice"'
expect_exit 0 vsan --json quota list
json_assert 'd["quotas"] == [{"identity": "alice", "limit": 3145728, "volumes": 64, "used": 3145728, "used_volumes": 1}]'
expect_exit 0 vsan --json token list
json_assert '[t["id"] for t in d["tokens"]] == [a[0]]' "$ID2"
expect_exit 18 vsan volume create a3 512 --owner alice
expect_exit 0 vsan volume delete a1
expect_exit 0 vsan --json quota list
json_assert 'd["quotas"][0]["used"] == 0'
expect_exit 0 vsan volume create a3 3M --owner alice

log "4. bad input"
expect_exit 2 vsan quota set "a:b" 1M
expect_out "':' or '='"
expect_exit 2 vsan quota set alice
expect_exit 2 vsan quota
expect_exit 2 vsan quota drop alice
expect_exit 2 vsan quota set alice 1G --volumes 0
expect_out "not a count of volumes"
expect_exit 2 vsan quota set alice 1G --volumes x
expect_exit 7 vsan quota set alice 1X
expect_exit 7 vsan quota set alice -1G
expect_exit 2 vsan token create ""
expect_exit 2 vsan token create
expect_exit 2 vsan token revoke
expect_exit 2 vsan token burn x
expect_exit 2 vsan volume create x 1M --owner
expect_exit 2 vsan volume create x 1M --owner "dn:"
expect_exit 2 vsan volume resize a3 4M --owner alice
expect_exit 4 vsan volume show x
vsand_stop TERM
log "ok"
