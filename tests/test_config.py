"""Config loading: defaults, validation messages that name the key and file, tokens from env."""

from pathlib import Path

import pytest

from bot.config import ConfigError, DiscordSettings, Settings, TelegramSettings, load_settings

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_documents_every_key_with_its_default():
    example = load_settings(REPO / "config.example.toml", env={})
    defaults = Settings()
    sections = (
        "model",
        "generation",
        "engine",
        "openai",
        "metrics",
        "storage",
        "chat",
        "telegram",
        "discord",
        "logging",
    )
    for section in sections:
        assert getattr(example, section) == getattr(defaults, section), section
    text = (REPO / "config.example.toml").read_text()
    for section in sections:
        assert f"\n[{section}]\n" in text, f"[{section}] is not documented"
        for key in getattr(defaults, section).__dataclass_fields__:
            assert f"\n{key} =" in text, f"[{section}] {key} is not documented"


def test_missing_default_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, env={})
    assert settings.model.quantization == "auto"
    assert settings.generation.temperature == 0.6
    assert settings.chat.reasoning == "collapsed"
    assert not settings.telegram.enabled


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[model]\nquantisation = 'nf4'\n", r"unknown key \[model\] 'quantisation'"),
        ("[modle]\n", r"unknown key 'modle'"),
        ("[model]\nquantization = 'q8'\n", r"model.quantization must be one of"),
        ("[generation]\ntemperature = 'hot'\n", r"generation.temperature must be a number"),
        ("[generation]\ntop_p = 1.5\n", r"generation.top_p must be in \(0, 1\]"),
        ("[generation]\nmax_new_tokens = 0\n", r"generation.max_new_tokens must be greater than 0"),
        ("[generation]\nstop = ['']\n", r"generation.stop must not contain empty strings"),
        (
            "[storage]\ncheckpoint_seconds = 0\n",
            r"storage.checkpoint_seconds must be greater than 0",
        ),
        ("[storage]\ncheckpoint_seconds = -1.5\n", r"storage.checkpoint_seconds must be greater"),
        ("[telegram]\nadmins = ['alice']\n", r"telegram.admins\[0\] must be an integer"),
        ("[telegram]\nenabled = 'yes'\n", r"telegram.enabled must be true or false"),
        ("[telegram]\nenabled = true\n", r"no token"),
        ("model = 3\n", r"\[model\] must be a table"),
        ("[model\n", r"not valid TOML"),
        ("[model]\nquantization = 'nf4'\ndevice = 'cpu'\n", r"needs a CUDA GPU"),
        ("[engine]\nbackend = 'vllm'\n", r"engine.backend must be one of 'local', 'openai'"),
        ("[openai]\nbase_url = 'localhost:8000'\n", r"openai.base_url must be an http"),
        ("[openai]\nbase_url = 'http://h:99999/v1'\n", r"openai.base_url must be an http"),
        ("[openai]\nmax_concurrency = 0\n", r"openai.max_concurrency must be greater than 0"),
        ("[openai]\nconnect_timeout = -1\n", r"openai.connect_timeout must be greater than 0"),
        ("[openai]\nread_timeout = 0\n", r"openai.read_timeout must be greater than 0"),
        ("[metrics]\nport = 70000\n", r"metrics.port must be a TCP port \(1-65535\), or 0"),
        ("[metrics]\nlisten = ''\n", r"metrics.listen must not be empty"),
    ],
)
def test_bad_values_name_the_key_and_the_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as error:
        load_settings(path, env={})
    assert str(path) in str(error.value)


def test_token_from_environment_enables_the_frontend(tmp_path):
    path = write(tmp_path, "[discord]\nadmins = [42]\n")
    settings = load_settings(
        path, env={"TELEGRAM_BOT_TOKEN": "123:abc", "DISCORD_BOT_TOKEN": "d.t"}
    )
    assert settings.telegram.enabled and settings.telegram.token == "123:abc"
    assert settings.discord.enabled and settings.discord.admins == (42,)


def test_explicitly_disabled_frontend_stays_off_with_env_token(tmp_path):
    path = write(tmp_path, "[telegram]\nenabled = false\n")
    settings = load_settings(path, env={"TELEGRAM_BOT_TOKEN": "123:abc"})
    assert not settings.telegram.enabled


def test_secrets_never_appear_in_errors_or_repr(tmp_path):
    path = write(tmp_path, "[telegram]\ntoken = 12345\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    assert "12345" not in str(error.value)
    settings = load_settings(
        write(tmp_path, "[telegram]\ntoken = 'sekrit:1'\nenabled = true\n"), env={}
    )
    assert "sekrit" not in repr(settings)
    assert "sekrit" not in repr(settings.telegram)


def test_integers_are_accepted_for_float_keys(tmp_path):
    settings = load_settings(write(tmp_path, "[generation]\ntemperature = 1\n"), env={})
    assert settings.generation.temperature == 1.0


def test_checkpoint_seconds_defaults_to_two_and_can_be_set(tmp_path):
    assert load_settings(write(tmp_path, ""), env={}).storage.checkpoint_seconds == 2.0
    settings = load_settings(write(tmp_path, "[storage]\ncheckpoint_seconds = 0.5\n"), env={})
    assert settings.storage.checkpoint_seconds == 0.5


def test_a_proxy_password_is_not_in_the_settings_repr():
    settings = TelegramSettings(proxy="http://alice:hunter2-secret@proxy.example:3128")
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in repr(DiscordSettings(proxy=settings.proxy))


PROXY_PASSWORD = "proxy-pass-7q"


@pytest.mark.parametrize(
    ("section", "proxy"),
    [
        ("telegram", f"http://alice:{PROXY_PASSWORD}@127.0.0.1:notaport"),
        ("telegram", f"http://alice:{PROXY_PASSWORD}@[::1"),
        ("telegram", f"ftp://alice:{PROXY_PASSWORD}@127.0.0.1:21"),
        ("discord", f"http://alice:{PROXY_PASSWORD}@127.0.0.1:notaport"),
        ("discord", f"http://alice:{PROXY_PASSWORD}@[::1"),
        ("discord", f"alice:{PROXY_PASSWORD}@127.0.0.1:3128"),  # no scheme
        ("discord", f"socks5://alice:{PROXY_PASSWORD}@127.0.0.1:1080"),  # aiohttp: HTTP only
    ],
    ids=[
        "telegram-bad-port",
        "telegram-bad-host",
        "telegram-bad-scheme",
        "discord-bad-port",
        "discord-bad-host",
        "discord-no-scheme",
        "discord-socks",
    ],
)
def test_a_malformed_proxy_url_names_the_key_without_its_password(tmp_path, section, proxy):
    # httpx and aiohttp would echo the whole URL, password included, in their own errors.
    path = write(tmp_path, f'[{section}]\nproxy = "{proxy}"\n')
    with pytest.raises(ConfigError, match=rf"config\.toml: {section}\.proxy must be") as failed:
        load_settings(path, env={})
    assert PROXY_PASSWORD not in str(failed.value)


@pytest.mark.parametrize(
    ("section", "proxy"),
    [
        ("telegram", "socks5://alice:pw@127.0.0.1:1080"),
        ("telegram", "http://127.0.0.1:3128"),
        ("discord", "https://alice:pw@proxy.example"),
    ],
)
def test_a_well_formed_proxy_url_is_accepted(tmp_path, section, proxy):
    settings = load_settings(write(tmp_path, f'[{section}]\nproxy = "{proxy}"\n'), env={})
    assert getattr(settings, section).proxy == proxy


def test_a_remote_backend_needs_no_gpu_for_a_quantized_model(tmp_path):
    # Nothing is loaded here with backend = "openai": the quantization is the server's business.
    path = write(tmp_path, "[engine]\nbackend = 'openai'\n[model]\ndevice = 'cpu'\n")
    settings = load_settings(path, env={})
    assert settings.engine.backend == "openai"
    assert settings.model.quantization == "auto"


def test_remote_and_metrics_defaults():
    settings = Settings()
    assert settings.engine.backend == "local"
    assert settings.openai.base_url == "http://127.0.0.1:8000/v1"
    assert settings.openai.model == "" and settings.openai.max_concurrency == 64
    assert settings.metrics.port == 0 and settings.metrics.listen == "127.0.0.1"


API_KEY = "sk-test-9d8c7b6a"


def test_the_api_key_comes_from_the_environment_unless_configured(tmp_path):
    path = write(tmp_path, "[engine]\nbackend = 'openai'\n")
    assert load_settings(path, env={"OPENAI_API_KEY": API_KEY}).openai.api_key == API_KEY
    assert load_settings(path, env={}).openai.api_key == ""
    configured = write(tmp_path, "[openai]\napi_key = 'from-file'\n")
    settings = load_settings(configured, env={"OPENAI_API_KEY": API_KEY})
    assert settings.openai.api_key == API_KEY  # the environment wins, as for every key


def test_the_api_key_never_appears_in_errors_or_repr(tmp_path):
    with pytest.raises(ConfigError, match=r"openai.api_key must be a string") as error:
        load_settings(write(tmp_path, "[openai]\napi_key = [1, 2, 987654]\n"), env={})
    assert "987654" not in str(error.value)
    settings = load_settings(write(tmp_path, f"[openai]\napi_key = '{API_KEY}'\n"), env={})
    assert settings.openai.api_key == API_KEY
    assert API_KEY not in repr(settings.openai)


def test_a_bad_base_url_with_a_password_is_not_echoed(tmp_path):
    path = write(tmp_path, "[openai]\nbase_url = 'ftp://alice:pw-77x@host/v1'\n")
    with pytest.raises(ConfigError, match=r"openai.base_url must be an http") as failed:
        load_settings(path, env={})
    assert "pw-77x" not in str(failed.value)


# -- every key from the environment


def test_any_key_comes_from_the_environment_and_wins_over_the_file(tmp_path):
    path = write(
        tmp_path,
        "[telegram]\ntoken = 'from-file:1'\nadmins = [1]\n[engine]\nmax_queue = 5\n",
    )
    env = {
        "BOT_TELEGRAM_TOKEN": "from-env:2",
        "BOT_TELEGRAM_ADMINS": "7, 8",
        "BOT_TELEGRAM_ALLOWED_USERS": "[9]",
        "BOT_ENGINE_MAX_QUEUE": "12",
        "BOT_ENGINE_CUDA_GRAPHS": "false",
        "BOT_GENERATION_TEMPERATURE": "0.3",
        "BOT_CHAT_SYSTEM_PROMPT": "Be brief.",
        "BOT_GENERATION_STOP": "",
        "HOME": "/home/bot",  # other variables are none of our business
    }
    settings = load_settings(path, env=env)
    assert settings.telegram.token == "from-env:2"
    assert settings.telegram.enabled  # as with TELEGRAM_BOT_TOKEN
    assert settings.telegram.admins == (7, 8)
    assert settings.telegram.allowed_users == (9,)
    assert settings.engine.max_queue == 12 and not settings.engine.cuda_graphs
    assert settings.generation.temperature == 0.3 and settings.generation.stop == ()
    assert settings.chat.system_prompt == "Be brief."


def test_the_usual_token_variable_wins_over_the_file_too(tmp_path):
    path = write(tmp_path, "[telegram]\ntoken = 'from-file:1'\nenabled = true\n")
    settings = load_settings(path, env={"TELEGRAM_BOT_TOKEN": "from-env:2"})
    assert settings.telegram.token == "from-env:2"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"BOT_ENGINE_MAX_QUEUE": "many"},
            "environment variable BOT_ENGINE_MAX_QUEUE: engine.max_queue must be an integer",
        ),
        (
            {"BOT_ENGINE_MAX_QUEUE": "0"},
            "environment variable BOT_ENGINE_MAX_QUEUE: engine.max_queue must be greater than 0",
        ),
        (
            {"BOT_ENGINE_CUDA_GRAPHS": "maybe"},
            "BOT_ENGINE_CUDA_GRAPHS: engine.cuda_graphs must be true or false",
        ),
        (
            {"BOT_MODEL_QUANTIZATION": "int3"},
            "BOT_MODEL_QUANTIZATION: model.quantization must be one of",
        ),
        (
            {"BOT_TELEGRAM_ADMINS": "1,x"},
            "BOT_TELEGRAM_ADMINS: telegram.admins[1] must be an integer",
        ),
        ({"BOT_NOSUCH_KEY": "1"}, "environment variable BOT_NOSUCH_KEY: no such setting"),
        (
            {"BOT_ENGINE_WARP_DRIVE": "1"},
            "environment variable BOT_ENGINE_WARP_DRIVE: [engine] has no key 'warp_drive'",
        ),
    ],
)
def test_a_bad_environment_value_names_the_variable(tmp_path, env, expected):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, ""), env=env)
    assert expected in str(error.value)
    assert str(error.value).startswith("environment variable BOT_")


def test_a_secret_from_the_environment_is_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, ""), env={"BOT_TELEGRAM_PROXY": "ftp://u:hunter2@h:1"})
    assert "hunter2" not in str(error.value)
    assert "BOT_TELEGRAM_PROXY" in str(error.value)
