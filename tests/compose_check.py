#!/usr/bin/python3
"""compose_check.py - checks the container and deployment files without Docker.

No Docker engine runs on the build machine, so compose.yaml and the
Dockerfile are never built or started here. This script checks instead that
they agree with the rest of the tree:

  * compose.yaml parses and has the services nats1..3, redis, n1..n3 (and sim
    under a profile), each with a health check, the nodes waiting for healthy
    NATS servers and Redis;
  * each presenced service sets PRESENCE_NODE_ID, PRESENCE_NATS_URL (all three
    NATS servers) and PRESENCE_REDIS_URL, and every PRESENCE_* variable named
    anywhere in compose.yaml is a setting that `presenced --help` lists;
  * every variable scripts/up.sh passes to presenced is set on the node
    services (with up.sh's default value, where up.sh gives a literal one);
  * the Dockerfile configures CMake with the same -D options as the
    Makefile's `build` target, its build stage installs the packages of
    scripts/deps.sh (minus the servers and test-only tools) and its runtime
    stage only runtime libraries;
  * deploy/presenced.env.example lists every setting of `presenced --help`;
  * the nodes keep the delta stream on every NATS server, Redis keeps /data
    in a named volume, each node publishes its metrics port and
    deploy/prometheus.yml scrapes all of them, host ports are published on
    loopback through ${VAR:-PORT} (movable), node health checks match no
    JSON text.

tests/compose/compose_test.py runs the same files for real with podman.

Usage: compose_check.py PATH/TO/presenced
Prints one line per check and "N passed, M failed" last; exits 1 if any
check failed, 2 on bad usage.
"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    print("compose_check: PyYAML is missing: apt-get install python3-yaml "
          "(scripts/deps.sh installs it)", file=sys.stderr)
    sys.exit(1)

ROOT = Path(__file__).resolve().parent.parent

NATS_SERVICES = ["nats1", "nats2", "nats3"]
NODE_SERVICES = ["n1", "n2", "n3"]
REQUIRED_SERVICES = NATS_SERVICES + ["redis"] + NODE_SERVICES
NODE_REQUIRED_ENV = ["PRESENCE_NODE_ID", "PRESENCE_NATS_URL", "PRESENCE_REDIS_URL"]
# One-shot services (they run once and exit 0): no health check.
ONE_SHOT_SERVICES = {"nats-auth"}
# The secrets nats-server reads from its environment (deploy/nats-accounts.conf):
# not presenced settings.
NATS_SERVER_SECRETS = re.compile(r"^PRESENCE_NATS_(PASS_[A-Z0-9_]*|NKEY_WATCHER)$")
AUTH_SCRIPT = "/usr/local/lib/presenced/compose-auth.sh"
# What up.sh may pass that compose.yaml need not: NATS credentials.
NATS_AUTH_SETTINGS = {"PRESENCE_NATS_USER", "PRESENCE_NATS_PASSWORD", "PRESENCE_NATS_TOKEN",
                      "PRESENCE_NATS_NKEY_SEED_FILE", "PRESENCE_NATS_CREDS_FILE"}

# Packages of scripts/deps.sh that the image's build stage does not need:
# the servers run in their own containers, the rest are test-only tools.
TEST_ONLY_PACKAGES = {"python3-yaml", "gnuplot-nox", "openssl", "valgrind",
                      "clang", "libclang-rt-14-dev",  # tests, fuzzing and benchmarks only
                      "chromium", "fonts-dejavu-core", "nodejs",  # the browser test
                      "libcriterion-dev",  # the C tests (PD_TESTS=OFF in the image)
                      # the compose test (tests/compose/): containers on the host
                      "podman", "podman-compose", "runc", "debootstrap",
                      "golang-github-containernetworking-plugin-dnsname"}
# What the runtime stage installs: the shared libraries and CA certificates.
RUNTIME_PACKAGES = {"libnats3.4", "libhiredis0.14", "libmsgpackc2", "libuv1", "libmicrohttpd12",
                    "libjansson4", "ca-certificates"}


class CheckFailed(Exception):
    pass


def fail(msg):
    raise CheckFailed(msg)


def read(rel):
    path = ROOT / rel
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        fail(f"cannot read {rel}: {e.strerror}")


def join_continuations(text):
    """Joins backslash-continued lines (shell, Makefile, Dockerfile)."""
    return re.sub(r"\\\n", " ", text)


# ---- what the sources say ---------------------------------------------------

def presenced_settings(binary):
    """{variable: flag} from `presenced --help`."""
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True,
                             timeout=30)
    except OSError as e:
        fail(f"cannot run {binary} --help: {e}")
    except subprocess.TimeoutExpired:
        fail(f"{binary} --help did not finish in 30 s")
    if out.returncode != 0:
        fail(f"{binary} --help exited {out.returncode}: {out.stderr.strip()}")
    settings = {}
    for line in out.stdout.splitlines():
        m = re.match(r"^\s*(--[a-z0-9-]+)(?:\s+[A-Z:]+)?\s+(PRESENCE_[A-Z0-9_]+)\s", line)
        if m:
            settings[m.group(2)] = m.group(1)
    if len(settings) < 5:
        fail(f"could not read the settings table of {binary} --help "
             f"(found {sorted(settings)})")
    return settings


def load_compose():
    text = read("compose.yaml")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        fail(f"compose.yaml does not parse: {e}")
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        fail("compose.yaml has no 'services' mapping")
    return text, doc


def service_env(svc):
    """A service's environment as a dict, from either Compose form."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out
    if isinstance(env, dict):
        return {str(k): ("" if v is None else str(v)) for k, v in env.items()}
    fail(f"environment is neither a mapping nor a list: {env!r}")


def deps_packages():
    text = read("scripts/deps.sh")
    m = re.search(r"^PACKAGES=\((.*?)^\)", text, re.S | re.M)
    if not m:
        fail("scripts/deps.sh: no PACKAGES=( ... ) array found")
    body = "\n".join(line.split("#", 1)[0] for line in m.group(1).splitlines())
    pkgs = body.split()
    if not pkgs:
        fail("scripts/deps.sh: PACKAGES is empty")
    return pkgs


def makefile_build_defines():
    """-D options of the cmake configure command of the Makefile's build target."""
    lines = join_continuations(read("Makefile")).splitlines()
    recipe, in_build = [], False
    for line in lines:
        if re.match(r"^build\s*:", line):
            in_build = True
            continue
        if in_build:
            if line.startswith("\t"):
                recipe.append(line.strip())
            elif line.strip() == "" or line.lstrip().startswith("#"):
                continue
            else:
                break
    configure = [c for c in recipe if re.match(r"cmake\s", c) and "--build" not in c]
    if len(configure) != 1:
        fail(f"Makefile: expected one cmake configure line in the build target, "
             f"found {configure}")
    return cmake_defines(configure[0]), configure[0]


def cmake_defines(cmd):
    tokens = shlex.split(cmd)
    defs = []
    for i, t in enumerate(tokens):
        if t == "-D" and i + 1 < len(tokens):
            defs.append(tokens[i + 1])
        elif t.startswith("-D") and len(t) > 2:
            defs.append(t[2:])
    return defs


def dockerfile_stages():
    """[(from_line, [RUN commands, continuations joined])] per stage."""
    text = join_continuations(read("Dockerfile"))
    stages = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        word, _, rest = s.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append({"from": rest.strip(), "run": [], "lines": []})
        elif stages:
            stages[-1]["lines"].append((word, rest.strip()))
            if word == "RUN":
                stages[-1]["run"].append(rest.strip())
    if not stages:
        fail("Dockerfile has no FROM")
    return stages


def shell_commands(run):
    """Splits a RUN line at && / ; / || into simple commands."""
    return [c.strip() for c in re.split(r"&&|\|\||;", run) if c.strip()]


def apt_installed(stage):
    pkgs = set()
    for run in stage["run"]:
        for cmd in shell_commands(run):
            tokens = shlex.split(cmd)
            # drop leading VAR=value assignments
            while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
                tokens.pop(0)
            if len(tokens) >= 2 and tokens[0] in ("apt-get", "apt") and "install" in tokens:
                after = tokens[tokens.index("install") + 1:]
                pkgs.update(t for t in after if not t.startswith("-"))
    return pkgs


def upsh_presenced_env(settings):
    """{variable: literal default or None} that scripts/up.sh gives presenced."""
    text = join_continuations(read("scripts/up.sh"))
    flag_to_var = {flag: var for var, flag in settings.items()}
    found, starts = {}, 0
    for line in text.splitlines():
        m = re.match(r"^\s*export\s+(PRESENCE_[A-Z0-9_]+)=(\S*)", line)
        if m:
            found[m.group(1)] = literal_default(m.group(2))
        # A command substitution is one word, whatever it holds.
        line = re.sub(r"\$\([^()]*\)", "CMDSUBST", line)
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        assigns = {}
        while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
            k, _, v = tokens.pop(0).partition("=")
            assigns[k] = v
        while tokens and tokens[0] in ("nohup", "exec", "env", "setsid"):
            tokens.pop(0)
        if not tokens or not re.search(r"(^|/)presenced$", tokens[0]):
            continue
        starts += 1
        for k, v in assigns.items():
            if k.startswith("PRESENCE_"):
                found[k] = literal_default(v)
        for t in tokens[1:]:
            flag = t.split("=", 1)[0]
            if flag in flag_to_var:
                found.setdefault(flag_to_var[flag], None)
    if starts == 0:
        fail("scripts/up.sh: found no command line that starts presenced; "
             "update compose_check.py if up.sh changed how it starts nodes")
    return found


def literal_default(value):
    """'${X:-5000}' -> '5000'; a plain literal -> itself; else None."""
    m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^${}]*)\}", value)
    if m:
        return m.group(1)
    if "$" not in value:
        return value
    return None


# ---- the checks ---------------------------------------------------------------

def check_compose_services(ctx):
    _, doc = ctx["compose"]
    services = doc["services"]
    missing = [s for s in REQUIRED_SERVICES if s not in services]
    if missing:
        fail(f"compose.yaml lacks the services {missing}")
    for s in REQUIRED_SERVICES:
        if services[s].get("profiles"):
            fail(f"compose.yaml: service {s} is under a profile; it must start by default")
    sims = [n for n, svc in services.items()
            if "sim" in (svc.get("profiles") or [])]
    if not sims:
        fail("compose.yaml: no service under the profile 'sim'")
    sim = services[sims[0]]
    cmd = sim.get("command")
    cmd_text = " ".join(cmd) if isinstance(cmd, list) else str(cmd or "")
    if "presence-sim" not in cmd_text:
        fail(f"compose.yaml: the sim service does not run presence-sim (command: {cmd_text!r})")
    return f"services {', '.join(REQUIRED_SERVICES)}; {sims[0]} under profile sim"


def check_compose_health(ctx):
    _, doc = ctx["compose"]
    services = doc["services"]
    for name, svc in services.items():
        if name in ONE_SHOT_SERVICES:
            if svc.get("restart") != "no":
                fail(f"compose.yaml: the one-shot service {name} must have restart: \"no\"")
            continue
        hc = svc.get("healthcheck") or {}
        if hc.get("disable") or not hc.get("test"):
            fail(f"compose.yaml: service {name} has no health check")
    for name in NODE_SERVICES:
        dep = services[name].get("depends_on") or {}
        for need in NATS_SERVICES + ["redis"]:
            cond = dep.get(need, {}).get("condition") if isinstance(dep, dict) else None
            if cond != "service_healthy":
                fail(f"compose.yaml: {name} does not depend on {need} with "
                     f"condition service_healthy")
        if "build" not in services[name]:
            fail(f"compose.yaml: {name} has no build (expected build: .)")
    return f"{len(services)} services with health checks; nodes wait for healthy NATS and Redis"


def check_compose_node_env(ctx):
    _, doc = ctx["compose"]
    for name in NODE_SERVICES:
        env = service_env(doc["services"][name])
        missing = [v for v in NODE_REQUIRED_ENV if not env.get(v)]
        if missing:
            fail(f"compose.yaml: {name} does not set {missing}")
        if env["PRESENCE_NODE_ID"] != name:
            fail(f"compose.yaml: {name} sets PRESENCE_NODE_ID={env['PRESENCE_NODE_ID']}")
        urls = env["PRESENCE_NATS_URL"].split(",")
        for nats in NATS_SERVICES:
            if not any(re.match(rf"^nats://{nats}:\d+$", u.strip()) for u in urls):
                fail(f"compose.yaml: {name}'s PRESENCE_NATS_URL does not list {nats}: "
                     f"{env['PRESENCE_NATS_URL']}")
        if not env["PRESENCE_REDIS_URL"].startswith("redis://redis:"):
            fail(f"compose.yaml: {name}'s PRESENCE_REDIS_URL does not point at the "
                 f"redis service: {env['PRESENCE_REDIS_URL']}")
    return "n1..n3 set PRESENCE_NODE_ID, PRESENCE_NATS_URL (3 servers), PRESENCE_REDIS_URL"


def check_compose_operations(ctx):
    """What running the cluster in containers needs (the defects found by
    running it, tests/compose/): the delta stream on every NATS server,
    Redis' data in a volume, one metrics port per node, scraped by the
    Prometheus service, and host ports that can be moved."""
    _, doc = ctx["compose"]
    services = doc["services"]
    for name in NODE_SERVICES:
        env = service_env(services[name])
        if env.get("PRESENCE_STREAM_REPLICAS") != str(len(NATS_SERVICES)):
            fail(f"compose.yaml: {name} sets PRESENCE_STREAM_REPLICAS="
                 f"{env.get('PRESENCE_STREAM_REPLICAS')!r}, expected {len(NATS_SERVICES)} "
                 f"(one copy per NATS server)")
    redis_vols = [str(v) for v in services["redis"].get("volumes") or []]
    named = [v.split(":")[0] for v in redis_vols if re.match(r"^[A-Za-z0-9][\w.-]*:/data(:|$)", v)]
    if not named or named[0] not in (doc.get("volumes") or {}):
        fail(f"compose.yaml: redis keeps /data in no declared named volume ({redis_vols})")
    metrics = {}
    for name in NODE_SERVICES:
        addr = service_env(services[name]).get("PRESENCE_METRICS_ADDR", "")
        m = re.fullmatch(r"0\.0\.0\.0:(\d+)", addr)
        if not m:
            fail(f"compose.yaml: {name} sets PRESENCE_METRICS_ADDR={addr!r}; "
                 f"expected 0.0.0.0:PORT (reachable by Prometheus)")
        metrics[name] = m.group(1)
        ports = [str(p) for p in services[name].get("ports") or []]
        if not any(p.endswith(":" + m.group(1)) for p in ports):
            fail(f"compose.yaml: {name} does not publish its metrics port {m.group(1)}")
    published = []
    for name, svc in services.items():
        for p in svc.get("ports") or []:
            m = re.fullmatch(r"127\.0\.0\.1:\$\{([A-Z0-9_]+):-(\d+)\}:\d+", str(p))
            if not m:
                fail(f"compose.yaml: {name} publishes {p!r}; expected "
                     f"127.0.0.1:${{VAR:-PORT}}:PORT (loopback, movable)")
            published.append(m.group(2))
    if len(published) != len(set(published)):
        fail(f"compose.yaml: a host port is published twice: {published}")
    prom = services.get("prometheus")
    if not prom:
        fail("compose.yaml has no prometheus service")
    confs = [str(v).split(":")[0] for v in prom.get("volumes") or []
             if str(v).split(":")[1:2] == ["/etc/prometheus/prometheus.yml"]]
    if not confs:
        fail("compose.yaml: prometheus mounts no /etc/prometheus/prometheus.yml")
    try:
        pconf = yaml.safe_load(read(confs[0].removeprefix("./")))
        targets = {t for job in pconf["scrape_configs"]
                   for sc in job.get("static_configs", []) for t in sc["targets"]}
    except (yaml.YAMLError, KeyError, TypeError) as e:
        fail(f"{confs[0]}: no scrape_configs/static_configs/targets: {e}")
    want = {f"{n}:{port}" for n, port in metrics.items()}
    if not want <= targets:
        fail(f"{confs[0]} does not scrape {sorted(want - targets)}")
    for name in NODE_SERVICES:
        test = (services[name].get("healthcheck") or {}).get("test")
        text = " ".join(test) if isinstance(test, list) else str(test)
        if "--json" in text:
            fail(f"compose.yaml: {name}'s health check matches JSON text (key order is free)")
    return (f"stream replicas {len(NATS_SERVICES)}, redis volume {named[0]}, metrics "
            f"{', '.join(sorted(want))} scraped by prometheus, {len(published)} movable host ports")


def check_compose_known_settings(ctx):
    text, _ = ctx["compose"]
    used = sorted(set(re.findall(r"PRESENCE_[A-Z0-9_]+", text)))
    # presence-dash's own settings (docs/dashboard.md) are not presenced's.
    dash = {"PRESENCE_DASH_ADDR", "PRESENCE_DASH_WEB"}
    unknown = [v for v in used if v not in ctx["settings"] and v not in dash
               and not NATS_SERVER_SECRETS.match(v)]
    if unknown:
        fail(f"compose.yaml uses {unknown}, which presenced --help does not list")
    return f"{len(used)} PRESENCE_* variables, all listed by presenced --help"


def check_upsh_env_in_compose(ctx):
    _, doc = ctx["compose"]
    upsh = upsh_presenced_env(ctx["settings"])
    if not upsh:
        fail("scripts/up.sh passes no PRESENCE_* variable to presenced?")
    for name in NODE_SERVICES:
        env = service_env(doc["services"][name])
        # Credentials: up.sh makes NATS accounts with passwords of its own
        # run; compose makes its own at `up` (check_compose_nats_auth).
        # up.sh gives each node its own loopback metrics port (PD_METRICS_PORT+k);
        # in compose each container has its own address (see
        # check_compose_operations for compose's metrics).
        missing = [v for v in upsh if v not in env and v not in NATS_AUTH_SETTINGS
                   and v != "PRESENCE_METRICS_ADDR"]
        if missing:
            fail(f"compose.yaml: {name} lacks {missing}, which scripts/up.sh passes to presenced")
        for var, dflt in upsh.items():
            if var in ("PRESENCE_NODE_ID", "PRESENCE_NATS_URL", "PRESENCE_REDIS_URL",
                       "PRESENCE_METRICS_ADDR") or var not in env:
                continue  # addresses differ between loopback and containers
            if var in NATS_AUTH_SETTINGS:
                continue  # see above
            if dflt is not None and env[var] != dflt:
                fail(f"compose.yaml: {name} sets {var}={env[var]}, scripts/up.sh uses {dflt}")
    shared = sorted(set(upsh) - NATS_AUTH_SETTINGS)
    return f"up.sh's {', '.join(shared)} set on n1..n3 (NATS credentials: up.sh's own)"


def check_dockerfile_cmake(ctx):
    make_defs, make_line = makefile_build_defines()
    stages = dockerfile_stages()
    configures = []
    for st in stages:
        for run in st["run"]:
            for cmd in shell_commands(run):
                if re.match(r"cmake\s", cmd) and "--build" not in cmd:
                    configures.append(cmd)
    if len(configures) != 1:
        fail(f"Dockerfile: expected one cmake configure command, found {configures}")
    docker_defs = cmake_defines(configures[0])
    if sorted(docker_defs) != sorted(make_defs):
        fail(f"Dockerfile configures with -D {sorted(docker_defs)}, the Makefile's build "
             f"target with -D {sorted(make_defs)} ({make_line})")
    return f"-D {' -D '.join(make_defs)} as in make build"


def check_dockerfile_packages(ctx):
    stages = dockerfile_stages()
    if len(stages) < 2:
        fail("Dockerfile is not multi-stage (build stage + runtime stage)")
    for st in stages:
        base = st["from"].split()[0]
        if base != "debian:bookworm-slim":
            fail(f"Dockerfile: stage FROM {st['from']}, expected debian:bookworm-slim")
    deps = deps_packages()
    expected = {p for p in deps
                if not p.endswith("-server") and p not in TEST_ONLY_PACKAGES}
    build = apt_installed(stages[0])
    if build != expected:
        fail(f"Dockerfile build stage installs {sorted(build)}; scripts/deps.sh minus "
             f"servers and test tools is {sorted(expected)} "
             f"(missing {sorted(expected - build)}, extra {sorted(build - expected)})")
    runtime = apt_installed(stages[-1])
    if runtime != RUNTIME_PACKAGES:
        fail(f"Dockerfile runtime stage installs {sorted(runtime)}, expected only "
             f"{sorted(RUNTIME_PACKAGES)}")
    return f"build stage: {len(build)} packages of deps.sh; runtime: {len(runtime)} packages"


def check_dockerfile_runtime(ctx):
    stages = dockerfile_stages()
    final = dict()
    for word, rest in stages[-1]["lines"]:
        final[word] = rest  # the last one of each instruction counts
    user = final.get("USER", "")
    if not user or user.split(":")[0] in ("root", "0"):
        fail(f"Dockerfile: the runtime stage does not run as a non-root user (USER {user!r})")
    ep = final.get("ENTRYPOINT", "")
    if "presenced" not in ep or "presencectl" in ep:
        fail(f"Dockerfile: ENTRYPOINT is {ep!r}, expected presenced")
    hc = final.get("HEALTHCHECK", "")
    if not ("presencectl" in hc and "cluster" in hc and "PRESENCE_NATS_URL" in hc):
        fail(f"Dockerfile: HEALTHCHECK does not run presencectl cluster against "
             f"$PRESENCE_NATS_URL: {hc!r}")
    copies = [rest for word, rest in stages[-1]["lines"] if word == "COPY"]
    if not any("--from=" in c for c in copies):
        fail("Dockerfile: the runtime stage copies nothing from the build stage")
    ignore = read(".dockerignore").split()
    for pat in ("build*/", ".state/", ".git"):
        if pat not in ignore and pat.rstrip("/") not in ignore:
            fail(f".dockerignore does not exclude {pat}")
    return f"USER {user}, ENTRYPOINT {ep}, HEALTHCHECK presencectl cluster, .dockerignore"


def check_env_example(ctx):
    text = read("deploy/presenced.env.example")
    listed = set(re.findall(r"^\s*#?\s*(PRESENCE_[A-Z0-9_]+)=", text, re.M))
    missing = sorted(set(ctx["settings"]) - listed)
    if missing:
        fail(f"deploy/presenced.env.example does not list {missing}")
    unknown = sorted(listed - set(ctx["settings"]))
    if unknown:
        fail(f"deploy/presenced.env.example lists {unknown}, unknown to presenced --help")
    return f"all {len(ctx['settings'])} settings of presenced --help"


def accounts_roles():
    """The user names of deploy/nats-accounts.conf."""
    text = (ROOT / "deploy" / "nats-accounts.conf").read_text()
    return set(re.findall(r"^\s*user:\s*([A-Za-z0-9_-]+)\s*$", text, re.M))


def auth_role(svc):
    """The role a service runs as through compose-auth.sh run, or None."""
    ep = svc.get("entrypoint") or []
    cmd = svc.get("command") or []
    argv = (ep if isinstance(ep, list) else [ep]) + (cmd if isinstance(cmd, list) else [cmd])
    if AUTH_SCRIPT not in argv:
        return None
    k = argv.index(AUTH_SCRIPT)
    if argv[k + 1:k + 2] != ["run"] or len(argv) < k + 5:
        return None
    return argv[k + 3]


def check_compose_nats_auth(ctx):
    """NATS with the accounts of deploy/nats-accounts.conf, secrets made at
    `up` (never in the tree), every client with a role of its own."""
    text, doc = ctx["compose"]
    services = doc["services"]
    if re.search(r"PRESENCE_NATS_(PASSWORD|PASS_[A-Z0-9_]+|TOKEN)\s*[:=]\s*[\"']?[A-Za-z0-9]", text):
        fail("compose.yaml holds a NATS password or token: secrets are made at `up`")
    server_conf = (ROOT / "deploy" / "nats-server.conf").read_text()
    if not re.search(r"^include \./nats-accounts\.conf$", server_conf, re.M):
        fail("deploy/nats-server.conf does not include ./nats-accounts.conf")
    init = services.get("nats-auth")
    if init is None or "init" not in (init.get("command") or []):
        fail("compose.yaml: no one-shot service nats-auth running compose-auth.sh init")
    roles = accounts_roles()
    for name in NATS_SERVICES:
        svc = services[name]
        mounts = [str(v) for v in svc.get("volumes") or []]
        if not any(m.startswith("./deploy/nats-accounts.conf:/etc/nats/nats-accounts.conf")
                   for m in mounts):
            fail(f"compose.yaml: {name} does not mount deploy/nats-accounts.conf next to "
                 f"its nats-server.conf")
        if auth_role(svc) != "nats":
            fail(f"compose.yaml: {name} does not start through compose-auth.sh run ... nats")
        dep = svc.get("depends_on") or {}
        if (dep.get("nats-auth") or {}).get("condition") != "service_completed_successfully":
            fail(f"compose.yaml: {name} does not wait for nats-auth to complete")
    want = {n: n for n in NODE_SERVICES}
    want.update({"dash": "dashboard"})
    for name, svc in services.items():
        if name in NATS_SERVICES or name in ONE_SHOT_SERVICES:
            continue
        env = service_env(svc)
        if "PRESENCE_NATS_URL" not in env and name not in want:
            continue
        role = auth_role(svc)
        if role is None:
            fail(f"compose.yaml: {name} talks to NATS without credentials")
        if role not in roles:
            fail(f"compose.yaml: {name} runs as {role!r}, not a user of deploy/nats-accounts.conf")
        if name in want and role != want[name]:
            fail(f"compose.yaml: {name} runs as {role!r}, expected {want[name]!r}")
    return (f"NATS servers include deploy/nats-accounts.conf; secrets made by nats-auth at up; "
            f"clients: " + ", ".join(f"{n} as {auth_role(services[n])}" for n in services
                                     if auth_role(services[n]) and n not in NATS_SERVICES))


CHECKS = [
    ("compose services", check_compose_services),
    ("compose health checks and order", check_compose_health),
    ("compose node environment", check_compose_node_env),
    ("compose operations", check_compose_operations),
    ("compose settings known to presenced", check_compose_known_settings),
    ("up.sh settings in compose", check_upsh_env_in_compose),
    ("compose NATS authentication", check_compose_nats_auth),
    ("Dockerfile cmake options", check_dockerfile_cmake),
    ("Dockerfile packages", check_dockerfile_packages),
    ("Dockerfile runtime stage", check_dockerfile_runtime),
    ("presenced.env.example", check_env_example),
]


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} PATH/TO/presenced", file=sys.stderr)
        return 2
    passed = failed = 0
    ctx = {}
    try:
        ctx["settings"] = presenced_settings(argv[1])
        ctx["compose"] = load_compose()
    except CheckFailed as e:
        print(f"FAIL setup: {e}")
        print(f"0 passed, {len(CHECKS)} failed")
        return 1
    for name, fn in CHECKS:
        try:
            detail = fn(ctx)
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}")
        else:
            passed += 1
            print(f"ok   {name}: {detail}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
