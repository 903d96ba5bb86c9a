"""Measures tollgate's account side on a loaded database (bench/accounts.sh
starts the server and passes its address): key creation, user edit,
revocation-to-refusal on the same server, login, a page of keys and users.
Prints the figures as JSON on stdout. Standard library only."""
import http.client
import json
import statistics
import sys
import time

HOST, PORT, ADMIN_PW = sys.argv[1], int(sys.argv[2]), sys.argv[3]
N = int(sys.argv[4]) if len(sys.argv) > 4 else 200
conn = http.client.HTTPConnection(HOST, PORT, timeout=30)


def call(method, path, token=None, body=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else None
    t = time.perf_counter()
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    raw = r.read()
    ms = (time.perf_counter() - t) * 1000
    return r.status, (json.loads(raw) if raw else None), ms


def ok(status, what, want=(200, 201, 204)):
    if status not in want:
        sys.exit(f"{what}: HTTP {status}")


def figures(xs):
    xs = sorted(xs)
    return {
        "p50_ms": round(statistics.median(xs), 3),
        "p95_ms": round(xs[int(len(xs) * 0.95) - 1], 3),
        "n": len(xs),
    }


def login(user, pw):
    s, b, ms = call("POST", "/auth/login", body={"username": user, "password": pw})
    ok(s, "login")
    return b["access_token"], ms


out = {}
admin, _ = login("admin", ADMIN_PW)
out["login"] = figures([login("admin", ADMIN_PW)[1] for _ in range(10)])

s, b, _ = call("POST", "/admin/users", admin,
               {"username": f"bench-{int(time.time())}", "password": "bench-password-1"})
ok(s, "create user")
uid, uname = b["id"], b["username"]
user, _ = login(uname, "bench-password-1")

made, times = [], []
for i in range(N):
    s, b, ms = call("POST", "/api/keys", user, {"name": f"bench-{i}"})
    ok(s, "create key")
    made.append((b["id"], b["api_key"]))
    times.append(ms)
out["key_create"] = figures(times)

times = []
for i in range(N):
    s, _, ms = call("PATCH", f"/admin/users/{uid}", admin, {"disabled": i % 2 == 0})
    ok(s, "edit user")
    times.append(ms)
s, _, _ = call("PATCH", f"/admin/users/{uid}", admin, {"disabled": False})
ok(s, "enable user")
out["user_edit"] = figures(times)
user, _ = login(uname, "bench-password-1")

# Revocation to refusal, on the server that revoked: the key works, is
# revoked, and the time runs until the first call with it is refused.
times = []
for kid, key in made[:50]:
    s, _, _ = call("GET", "/subscriptions/me", key)
    ok(s, "call with a new key", (200,))
    t = time.perf_counter()
    s, _, _ = call("DELETE", f"/api/keys/{kid}", user)
    ok(s, "revoke")
    while True:
        s, _, _ = call("GET", "/subscriptions/me", key)
        if s == 401:
            break
        if time.perf_counter() - t > 5:
            sys.exit("revoked key still served after 5 s")
    times.append((time.perf_counter() - t) * 1000)
out["revoke_to_refusal"] = figures(times)

for name, path in [
    ("page_admin_keys", "/admin/keys?limit=100"),
    ("page_admin_keys_deep", None),
    ("page_admin_users", "/admin/users?limit=100"),
    ("search_admin_users", "/admin/users?limit=100&q=load-4242"),
]:
    if path is None:
        # A page from the middle of the list, by its cursor.
        s, b, _ = call("GET", "/admin/keys?limit=1", admin)
        ok(s, "page")
        path = f"/admin/keys?limit=100&before={b['data'][0]['id'] // 2}"
    times = []
    for _ in range(50):
        s, b, ms = call("GET", path, admin)
        ok(s, name, (200,))
        times.append(ms)
    out[name] = figures(times)
print(json.dumps(out))
