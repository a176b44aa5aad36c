"""Corpora for the scrubber tests: fake secrets in realistic text, and ordinary text.

Every secret is generated from a seeded random source, so no real-looking credential is
committed verbatim (secret scanners stay quiet) and each run sees the same corpus.
Prefixes that scanners key on are assembled from pieces for the same reason.
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
BASE64URL = ALNUM + "-_"
BASE64 = ALNUM + "+/"
HEX = "0123456789abcdef"
# What people put in passwords, minus the characters that end an unquoted value in
# text (space, quotes, `,;&`): those passwords are only safe quoted, see test_corpus.
PASSWORD_CHARS = ALNUM + "!#$%*+-./:=?@^_~"


@dataclass(frozen=True)
class Secret:
    """A fake secret: ``form`` is how it appears in text, ``parts`` must never survive."""

    shape: str
    form: str
    parts: tuple[str, ...]


def _random(rng: random.Random, alphabet: str, size: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(size))


def _with_digit(rng: random.Random, alphabet: str, size: int) -> str:
    """Random text with at least one digit (real keys have them; see the openai pattern)."""
    text = _random(rng, alphabet, size - 1)
    cut = rng.randrange(size)
    return text[:cut] + rng.choice(string.digits) + text[cut:]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(rng: random.Random) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": str(rng.randrange(10**9)), "iat": 1714560000, "scope": "read write"}
    payload = _b64url(json.dumps(claims).encode())
    signature = _b64url(rng.randbytes(32))
    return f"{header}.{payload}.{signature}"


def _pem(rng: random.Random, label: str) -> tuple[str, tuple[str, ...]]:
    body = base64.b64encode(rng.randbytes(rng.randrange(300, 700))).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    marker = "PRIVATE" + " KEY"
    begin, end = f"-----BEGIN {label}{marker}-----", f"-----END {label}{marker}-----"
    parts = tuple(line for line in lines if len(line) >= 16)
    return "\n".join([begin, *lines, end]), parts


def _discord(rng: random.Random) -> str:
    user_id = str(rng.randrange(10**17, 10**18)).encode()
    first = base64.b64encode(user_id).decode().rstrip("=")
    return f"{first}.{_random(rng, BASE64URL, 6)}.{_random(rng, BASE64URL, 38)}"


def _password(rng: random.Random) -> str:
    return _with_digit(rng, PASSWORD_CHARS, rng.randrange(10, 24)).lstrip("[")


def secrets(seed: int = 406) -> list[Secret]:
    """At least one fake secret of every shape the scrubber knows, in its usual form."""
    rng = random.Random(seed)
    out: list[Secret] = []

    def add(shape: str, form: str, *parts: str) -> None:
        out.append(Secret(shape, form, parts))

    def token(shape: str, make: Callable[[], str], form: str = "{}") -> None:
        value = make()
        add(shape, form.format(value), value)

    sk = "s" + "k"
    token("openai", lambda: f"{sk}-{_with_digit(rng, ALNUM, 48)}")
    token("openai_spec_406", lambda: f"{sk}-{_with_digit(rng, string.ascii_lowercase, 30)}")
    token("openai_project", lambda: f"{sk}-proj-{_with_digit(rng, BASE64URL, 156)}")
    token("openai_service", lambda: f"{sk}-svcacct-{_with_digit(rng, BASE64URL, 120)}")
    token("openrouter", lambda: f"{sk}-or-v1-{_random(rng, HEX, 64)}")
    token("anthropic", lambda: f"{sk}-ant-api03-{_random(rng, BASE64URL, 93)}AA")
    token("anthropic_admin", lambda: f"{sk}-ant-admin01-{_random(rng, BASE64URL, 93)}AA")
    token("aws_access_key_id", lambda: "AKIA" + _random(rng, string.ascii_uppercase + "234567", 16))
    token("aws_temporary_key_id", lambda: "ASIA" + _random(rng, string.ascii_uppercase, 16))
    aws_secret = _random(rng, BASE64, 40)
    add("aws_secret_env", f"AWS_SECRET_ACCESS_KEY={aws_secret}", aws_secret)
    aws_secret = _random(rng, BASE64, 40)
    add("aws_secret_ini", f"aws_secret_access_key = {aws_secret}", aws_secret)
    aws_secret = _random(rng, BASE64, 40)
    add("aws_secret_json", json.dumps({"SecretAccessKey": aws_secret}), aws_secret)
    for kind in "pousr":
        token(f"github_gh{kind}", lambda kind=kind: f"gh{kind}_{_random(rng, ALNUM, 36)}")
    token(
        "github_fine_grained",
        lambda: f"github_pat_{_random(rng, ALNUM, 22)}_{_random(rng, ALNUM, 59)}",
    )
    token("gitlab", lambda: "glpat-" + _random(rng, BASE64URL, 20))
    token("gitlab_deploy", lambda: "gldt-" + _random(rng, BASE64URL, 20))
    for kind in "bpar":
        token(
            f"slack_xox{kind}",
            lambda kind=kind: (
                f"xox{kind}-{_random(rng, string.digits, 12)}-"
                f"{_random(rng, string.digits, 13)}-{_random(rng, ALNUM, 24)}"
            ),
        )
    token("slack_app", lambda: f"xapp-1-A{_random(rng, ALNUM, 10)}-{_random(rng, HEX, 64)}")
    webhook = (
        f"T{_random(rng, string.ascii_uppercase, 8)}/B{_random(rng, string.ascii_uppercase, 8)}"
        f"/{_random(rng, ALNUM, 24)}"
    )
    add("slack_webhook", f"https://hooks.slack.com/services/{webhook}", webhook)
    hook = f"{rng.randrange(10**17, 10**18)}/{_random(rng, BASE64URL, 68)}"
    add("discord_webhook", f"https://discord.com/api/webhooks/{hook}", hook)
    token("discord_bot", lambda: _discord(rng), "DISCORD_BOT={}")
    token("stripe_live", lambda: "sk_live_" + _random(rng, ALNUM, 24))
    token("stripe_restricted", lambda: "rk_live_" + _random(rng, ALNUM, 24))
    token("stripe_test", lambda: "sk_test_" + _random(rng, ALNUM, 24))
    token("stripe_webhook", lambda: "whsec_" + _random(rng, ALNUM, 32))
    token("google_api", lambda: "AIza" + _random(rng, BASE64URL, 35))
    token("google_oauth_secret", lambda: "GOCSPX-" + _random(rng, BASE64URL, 28))
    token("google_oauth_token", lambda: "ya29." + _random(rng, BASE64URL, 120))
    token("jwt", lambda: _jwt(rng))
    token("jwt_cookie", lambda: _jwt(rng), "Set-Cookie: session={}; Path=/; HttpOnly")
    bearer = _random(rng, BASE64URL + ".~", 32)
    add("bearer_header", f"Authorization: Bearer {bearer}", bearer)
    bearer = _with_digit(rng, BASE64URL, 40)
    add("bearer_curl", f"curl -H 'Authorization: Bearer {bearer}' https://api.example.com", bearer)
    bearer = _with_digit(rng, ALNUM, 24)
    add("bearer_bare", f"retrying with bearer {bearer}", bearer)
    user, password = "svc-" + _random(rng, string.ascii_lowercase, 6), _password(rng)
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    add("basic_header", f"Authorization: Basic {basic}", basic)
    basic = base64.b64encode(f"{user}:{_password(rng)}".encode()).decode()
    add("basic_bare", f"upstream sent Basic {basic} again", basic)
    password = _password(rng).replace("@", "").replace("/", "")
    add("url_credentials", f"https://deploy:{password}@git.example.com/org/repo.git", password)
    for scheme, port in (("postgres", 5432), ("postgresql", 5432), ("mysql", 3306)):
        password = _random(rng, ALNUM + "-_.~", 20)
        add(f"db_{scheme}", f"{scheme}://app:{password}@db.internal:{port}/prod", password)
    password = _random(rng, ALNUM, 24)
    add(
        "db_mongodb_srv",
        f"mongodb+srv://app:{password}@cluster0.ab1cd.mongodb.net/prod?retryWrites=true",
        password,
    )
    password = _random(rng, ALNUM, 32)
    add("db_redis", f"redis://:{password}@cache.internal:6379/0", password)
    password = _password(rng)
    add("password_equals", f"password={password}", password)
    password = _random(rng, PASSWORD_CHARS + " ,;&'", 20).strip()
    add("password_json", json.dumps({"user": "ops", "password": password}), password)
    password = _password(rng)
    add("password_yaml", f"database:\n  user: ops\n  password: {password}\n  port: 5432", password)
    password = _random(rng, PASSWORD_CHARS + " ,;&", 18).strip()
    add("password_python_repr", repr({"password": password, "retries": 3}), password)
    query_token, query_key = _random(rng, BASE64URL, 32), _random(rng, ALNUM, 32)
    add(
        "query_string",
        f"GET /callback?token={query_token}&api_key={query_key}&page=2 HTTP/1.1",
        query_token,
        query_key,
    )
    signature = _random(rng, ALNUM + "%", 44)
    add(
        "azure_sas_url",
        f"https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&se=2030-01-01&sig={signature}",
        signature,
    )
    for label in ("RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED ", "DSA "):
        form, parts = _pem(rng, label)
        add(f"pem_{label.strip().lower() or 'pkcs8'}", form, *parts)
    form, parts = _pem(rng, "RSA ")
    add("pem_in_json", json.dumps({"type": "service_account", "private_key": form}), *parts)
    token("huggingface", lambda: "hf_" + _random(rng, ALNUM, 34))
    token("npm", lambda: "npm_" + _random(rng, ALNUM, 36))
    token("pypi", lambda: "pypi-AgEIcHlwaS5vcmc" + _random(rng, BASE64URL, 70))
    token(
        "sendgrid",
        lambda: f"SG.{_random(rng, BASE64URL, 22)}.{_random(rng, BASE64URL, 43)}",
    )
    token("twilio", lambda: "SK" + _random(rng, HEX, 32))
    account_key = base64.b64encode(rng.randbytes(64)).decode()
    add(
        "azure_storage",
        "DefaultEndpointsProtocol=https;AccountName=acct;"
        f"AccountKey={account_key};EndpointSuffix=core.windows.net",
        account_key,
    )
    django = _random(rng, string.ascii_lowercase + string.digits + "!@#$%^&*(-_=+)", 50)
    add("django_secret_key", f"SECRET_KEY={django}", django)
    env_token = _random(rng, ALNUM, 40)
    add("env_token", f"export SERVICE_AUTH_TOKEN={env_token}", env_token)
    token("groq", lambda: "gsk_" + _random(rng, ALNUM, 52))
    token("replicate", lambda: "r8_" + _random(rng, ALNUM, 37))
    token("xai", lambda: "xai-" + _random(rng, ALNUM, 80))
    token("perplexity", lambda: "pplx-" + _random(rng, ALNUM, 48))
    token("tavily", lambda: "tvly-" + _random(rng, ALNUM, 32))
    token("langsmith", lambda: f"lsv2_pt_{_random(rng, HEX, 32)}_{_random(rng, HEX, 10)}")
    token("databricks", lambda: "dapi" + _random(rng, HEX, 32))
    token("vault", lambda: "hvs." + _random(rng, BASE64URL, 90))
    token("digitalocean", lambda: "dop_v1_" + _random(rng, HEX, 64))
    cookie = _random(rng, BASE64URL, 40)
    add("cookie_header", f"Cookie: sessionid={cookie}; csrftoken=abc", cookie)
    api_key = _random(rng, ALNUM, 32)
    add("x_api_key_header", f"X-Api-Key: {api_key}", api_key)
    client_secret = _random(rng, BASE64URL, 40)
    add("oauth_client_secret", f"client_secret={client_secret}&grant_type=refresh", client_secret)
    return out


def contexts(form: str) -> list[str]:
    """``form`` embedded in log lines, JSON, tracebacks, reprs and shell commands."""
    return [
        form,
        f"2024-05-01T12:00:03.123Z ERROR agent.tools request failed: {form} (attempt 2/3)",
        f"[worker-3] WARN retry scheduled; last error was {form!r}",
        json.dumps({"event": "tool_error", "detail": form, "retry": True}),
        json.dumps({"payload": json.dumps({"detail": form})}),  # JSON inside a JSON string
        "Traceback (most recent call last):\n"
        '  File "/srv/agent/tools.py", line 42, in call\n'
        "    response = client.post(url, headers=headers, timeout=30)\n"
        f"httpx.HTTPStatusError: 401 Unauthorized for {form}",
        f"$ ./deploy.sh --env prod {form} --dry-run",
        f"tool_input={{'command': 'run', 'args': [{form!r}]}}",
    ]


def ordinary_text(seed: int = 355) -> list[str]:
    """Text that holds no secret and must come out of the scrubber unchanged."""
    rng = random.Random(seed)
    uuids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(15)]
    shas = [_random(rng, HEX, 40) for _ in range(15)]
    short_shas = [_random(rng, HEX, rng.choice((7, 8, 10, 12))) for _ in range(10)]
    hashes = [_random(rng, HEX, 64) for _ in range(5)] + [_random(rng, HEX, 32) for _ in range(5)]
    words = ["hello", "search", "tachimeter", "agent", "refactor", "claude", "metrics"]
    base64_words = [base64.b64encode(word.encode()).decode() for word in words]
    fixed = [
        # prose
        "The agent finished the refactor in three steps and asked for review.",
        "Search returned 12 results; the top one was a stale cache entry.",
        "Please rotate the keys every 90 days and store them in the vault.",
        "Bearer authentication is required for this endpoint.",
        "Basic usage: run the CLI with --help to see every option.",
        "The token budget was exceeded, so the model stopped early.",
        "User asked: what is the password policy for new accounts?",
        "Enter your password to continue.",
        "Set the API key in your environment before running the demo.",
        "The secret to good telemetry is cheap collection and bounded queues.",
        "Use `tachimeter serve` to open the dashboard on 127.0.0.1.",
        "Cost per token dropped 40% after switching to the cached prompt.",
        "Unexpected token } in JSON at position 17",
        "SyntaxError: Unexpected token '<', \"<!DOCTYPE \" is not valid JSON",
        "No credentials were found, falling back to anonymous access.",
        "The cookie banner was dismissed by 73% of visitors.",
        # model names and versions
        "claude-sonnet-4-20250514",
        "claude-3-5-haiku-20241022",
        "claude-opus-4-1",
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "o3-mini-high",
        "gemini-2.5-pro-preview-05-06",
        "meta-llama/Llama-3.1-8B-Instruct",
        "mistral-large-latest",
        "text-embedding-3-small",
        "v1.2.3",
        "2.0.0-rc.1+build.5",
        "0.1.0",
        "Python 3.11.7",
        "tachimeter/0.1.0 (linux; x86_64)",
        # file paths
        "/srv/app/main.py",
        "src/tachimeter/privacy/scrubber.py",
        "C:\\Users\\dev\\AppData\\Local\\tachimeter\\analytics.db",
        "~/.local/share/tachimeter/analytics.db",
        "/home/ci/.cache/pip/wheels/4f/8a/tokenizers-0.19.1-cp311-manylinux_2_17_x86_64.whl",
        "tests/privacy/test_corpus.py::test_zero_leaks[jwt-3]",
        "/var/log/nginx/access.log.2.gz",
        "node_modules/@types/node/index.d.ts",
        # URLs without credentials
        "https://example.com/search?q=retry+backoff&page=2",
        "https://api.anthropic.com/v1/messages",
        "https://github.com/org/repo/pull/123#discussion_r987654321",
        "http://localhost:8080/api/v1/events?limit=100&since=2024-05-01T00:00:00Z",
        "https://docs.python.org/3/library/re.html#re.Pattern.search",
        "git@github.com:org/repo.git",
        "ssh://git@github.com:22/org/repo.git",
        "postgres://db.internal:5432/prod",
        "redis://cache.internal:6379/0",
        "https://www.google.com/maps/place/Paris?hl=en&key_hint=none",
        "https://keycloak.example.com/auth/realms/main/protocol/openid-connect/token",
        # timestamps and numbers
        "2024-05-01T12:00:03.123456Z",
        "2024-05-01 12:00:03,123",
        "Wed, 01 May 2024 12:00:03 GMT",
        "1714564803",
        "3.14159",
        "-42",
        "1e-9",
        "12:30:45",
        "duration=1532ms",
        # emails are personal data, not secrets: kept unless an extra pattern says so
        "ada.lovelace@example.com",
        "contact: ops-team+alerts@example.org",
        # tool names and telemetry keys
        "read_file",
        "web_search",
        "bash",
        "str_replace_based_edit_tool",
        "gen_ai.usage.input_tokens",
        "gen_ai.request.model",
        "input_tokens=1520 output_tokens=310 cache_read_input_tokens=1024",
        "max_tokens: 4096",
        "token_count=5120",
        "tokens_used: 81234",
        "total_tokens = 1830",
        "time_to_first_token: 0.35s",
        "cost_per_token=0.000003",
        "password_changed_at: 2024-03-01T10:00:00Z",
        "token_type: bearer",
        "secret_name: prod/db",
        "key: user_id",
        "cache key=embeddings:v2:abc",
        "primary_key = id",
        "api_key_id: 42",
        "partition_key=tenant_17",
        # code
        "def authenticate(self, username: str, password: str) -> bool:",
        "    api_key: str | None = None",
        '    client = OpenAI(api_key=os.environ["OPENAI_API_KEY"])',
        "    token = tokenizer.encode(text)",
        "    password = getpass.getpass()",
        "    self.api_key = api_key",
        "    return Response(status_code=401, detail='invalid token')",
        'headers = {"Authorization": f"Bearer {api_key}"}',
        "for i, token in enumerate(tokens):",
        "if not secret: raise ValueError('missing secret')",
        "let token = lexer.next_token()?;",
        "fn verify(password: &str, hash: &PasswordHash) -> bool {",
        "impl Default for Config { fn default() -> Self { Self { max_tokens: 1024 } } }",
        '    let api_key = std::env::var("ANTHROPIC_API_KEY")?;',
        "const token = req.headers['authorization'];",
        "SELECT user_id, COUNT(*) FROM analytics_events WHERE timestamp > ? GROUP BY user_id",
        "UPDATE users SET password_hash = ? WHERE id = ?",
        "INSERT INTO sessions (token, user_id) VALUES ($1, $2)",
        "CREATE INDEX idx_events_ts ON analytics_events(timestamp, event_name);",
        "password = ?",
        "x = {'a': 1, 'b': [1, 2, 3]}",
        "print(f'{elapsed:.2f}s')",
        "assert scrubber.scrub_text(text) == text",
        "kubectl get pods -n agents -o wide",
        "docker run --rm -p 8080:8080 ghcr.io/org/tachimeter:0.1.0",
        "pip install 'tachimeter[dev]>=0.1'",
        "git commit -m 'Fix token counting for cached prompts'",
        "curl -sS https://example.com/health",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "HOME=/home/agent",
        "LANG=en_US.UTF-8",
        "TACHIMETER_APP_VERSION=1.4.2",
        "OPENAI_BASE_URL=https://api.openai.com/v1",
        "ANTHROPIC_MODEL=claude-sonnet-4-20250514",
        # logs
        "2024-05-01T12:00:03Z INFO agent.loop step=3 tool=read_file duration_ms=120 ok",
        '127.0.0.1 - - [01/May/2024:12:00:03 +0000] "GET /metrics HTTP/1.1" 200 5123',
        "WARNING: retrying request (attempt 2 of 5) after ConnectionResetError",
        "INFO  [collector] flushed 512 events in 12.3 ms (queue depth 0)",
        "mission m-42 completed: 7 steps, 3 tool calls, 1830 tokens, $0.0123",
        'File "/srv/agent/loop.py", line 88, in run_step',
        "KeyError: 'api_key'",
        "ValueError: token must be a non-empty string",
        "Authentication failed: invalid credentials",
        "HTTP 401: missing Authorization header",
        "rate limit: 50 requests/min, 40000 tokens/min",
        '{"input_tokens": 512, "output_tokens": 128, "model": "claude-sonnet-4-20250514"}',
        '{"event": "tool_invoked", "tool": "web_search", "success": true, "duration_ms": 830}',
        '{"gen_ai.usage.input_tokens": 1520, "gen_ai.usage.output_tokens": 310}',
        '{"max_tokens": 1024, "temperature": 0.2, "stop": ["\\n\\n"]}',
        '{"key": "feature_flag.new_ui", "value": true}',
        "Processing batch 17/40 (task-abc123def456ghi789jkl012mno345)",
        "k8s pod agent-worker-7d9f8c6b5d-x2k4q restarted",
        "image sha256:" + _random(rng, HEX, 64),
        'etag W/"' + _random(rng, HEX, 32) + '"',
        "trace_id=" + _random(rng, HEX, 32) + " span_id=" + _random(rng, HEX, 16),
        "request-id: req_" + _random(rng, ALNUM, 24),
        "msg_" + _random(rng, ALNUM, 24),
        "toolu_" + _random(rng, ALNUM, 24),
        "chatcmpl-" + _random(rng, ALNUM, 29),
        "call_" + _random(rng, ALNUM, 24),
        "run_" + _random(rng, ALNUM, 24),
        "TooManyRequests: please slow down",
        "AKIA is the prefix of an AWS access key id",
        "The sk- prefix marks OpenAI keys",
        "ghp_ tokens are GitHub personal access tokens",
        "eyJ is how base64 JSON starts",
        "-----BEGIN CERTIFICATE-----",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + _random(rng, BASE64, 43) + " dev@laptop",
    ]
    return (
        uuids
        + shas
        + short_shas
        + hashes
        + base64_words
        + [f"commit {sha}" for sha in shas[:5]]
        + [f"uuid={value}" for value in uuids[:5]]
        + fixed
    )
