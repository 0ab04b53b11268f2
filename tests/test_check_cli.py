"""`sms-balance-bot check` through the console script: exit codes, table, JSON, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botproc import run_cli
from builders import StartSim

from bot.simulator import JPushSimulator, SimScope

OK = {"balance": 50_000, "voice": 50_000, "industry": 121_981, "market": 11_683}


@pytest.fixture
async def sim(start_sim: StartSim) -> JPushSimulator:
    simulator = JPushSimulator()
    simulator.add_scope(SimScope(key="dev", secret="dev-secret", kind="account", balances=dict(OK)))
    simulator.add_scope(SimScope(key="shop", secret="shop-secret", kind="app", balances=dict(OK)))
    return await start_sim(simulator)


def env_for(sim: JPushSimulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    assert sim.base_url is not None
    env = {
        "JPUSH_BASE_URL": sim.base_url,
        "JPUSH_DEV_KEY": "dev",
        "JPUSH_DEV_SECRET": "dev-secret",
        "JPUSH_APPS": json.dumps(
            [{"name": "shop", "app_key": "shop", "master_secret": "shop-secret"}]
        ),
        "STATE_URL": f"sqlite:///{tmp_path}/state.db",
    }
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("setup", "code", "status"),
    [
        ({}, 0, "ok"),
        ({("shop", "industry"): 999}, 1, "warning"),
        ({("dev", "balance"): 9}, 2, "critical"),
        ({("dev", "balance"): 9, ("shop", "voice"): 500}, 2, "critical"),
        ({("shop", "market"): None}, 0, "ok"),
    ],
)
async def test_exit_status_follows_the_worst_scope(
    sim: JPushSimulator,
    tmp_path: Path,
    setup: dict[tuple[str, str], int | None],
    code: int,
    status: str,
) -> None:
    for (key, quota_type), value in setup.items():
        sim.set_balance(key, quota_type, value)
    rc, out, err = await run_cli(["check", "--json"], env_for(sim, tmp_path), tmp_path)
    assert rc == code, err
    data = json.loads(out)
    assert data["status"] == status
    assert [s["name"] for s in data["scopes"]] == ["account", "shop"]


async def test_unknown_when_a_scope_cannot_be_read(sim: JPushSimulator, tmp_path: Path) -> None:
    env = env_for(sim, tmp_path)
    env["JPUSH_APPS"] = json.dumps([{"name": "shop", "app_key": "shop", "master_secret": "wrong"}])
    sim.set_balance("dev", "voice", 500)  # a warning elsewhere does not hide the unknown
    rc, out, _ = await run_cli(["check", "--json"], env, tmp_path)
    assert rc == 3
    data = json.loads(out)
    assert data["status"] == "unknown"
    shop = data["scopes"][1]
    assert shop["status"] == "unknown"
    assert shop["error"]["code"] == 50002
    assert shop["balances"] is None and shop["levels"] is None
    assert sim.stats.requests_by_key.get("shop", 0) == 1  # auth failures are not retried


async def test_critical_beats_unknown(sim: JPushSimulator, tmp_path: Path) -> None:
    env = env_for(sim, tmp_path)
    env["JPUSH_APPS"] = json.dumps([{"name": "shop", "app_key": "shop", "master_secret": "wrong"}])
    sim.set_balance("dev", "industry", 5)
    rc, out, _ = await run_cli(["check", "--json"], env, tmp_path)
    assert rc == 2
    assert json.loads(out)["status"] == "critical"


async def test_json_shape_is_the_documented_one(sim: JPushSimulator, tmp_path: Path) -> None:
    sim.set_balance("dev", "balance", 9)
    sim.set_balance("dev", "voice", 702)
    rc, out, _ = await run_cli(["check", "--json"], env_for(sim, tmp_path), tmp_path)
    assert rc == 2
    data = json.loads(out)
    account = data["scopes"][0]
    assert account == {
        "name": "account",
        "kind": "account",
        "status": "critical",
        "error": None,
        "balances": {"balance": 9, "voice": 702, "industry": 121981, "market": 11683},
        "levels": {"balance": "critical", "voice": "warning", "industry": "ok", "market": "ok"},
        "forecast": {},
    }


async def test_table_output(sim: JPushSimulator, tmp_path: Path) -> None:
    sim.set_balance("shop", "industry", 999)
    rc, out, _ = await run_cli(["check"], env_for(sim, tmp_path), tmp_path)
    assert rc == 1
    assert "121,981" in out
    assert "warning" in out
    lines = out.splitlines()
    assert any("shop" in line and "industry" in line for line in lines)


async def test_table_in_chinese_with_times_in_tz(sim: JPushSimulator, tmp_path: Path) -> None:
    sim.set_balance("shop", "industry", 999)
    env = env_for(sim, tmp_path, MESSAGE_LANGUAGE="zh-CN", TZ="Asia/Shanghai")
    rc, out, _ = await run_cli(["check"], env, tmp_path)
    assert rc == 1
    lines = out.splitlines()
    assert lines[0].split() == ["范围", "类型", "余量", "级别", "阈值", "预计用完"]
    assert any(line.split()[:4] == ["shop", "行业", "999", "预警"] for line in lines)
    assert "121,981" in out and "全类型" in out and "营销" in out
    assert lines[-1].startswith("总体：预警（退出码 1）") and lines[-1].endswith("北京时间")
    # JSON is for programs: the same words in every language
    rc, out, _ = await run_cli(["check", "--json"], env, tmp_path)
    assert json.loads(out)["status"] == "warning"


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"POLL_INTERVAL": "soon"}, "POLL_INTERVAL"),
        ({"JPUSH_APPS": "[{not json"}, "JPUSH_APPS"),
        ({"ALERT_CRITICAL_MARKET": "5000"}, "ALERT_CRITICAL_MARKET"),
        ({"JPUSH_TIMEOUT": "-1"}, "JPUSH_TIMEOUT"),
        ({"STATE_URL": "postgres://db"}, "STATE_URL"),
    ],
)
async def test_configuration_error_is_one_line_exit_3_without_secrets(
    sim: JPushSimulator, tmp_path: Path, extra: dict[str, str], variable: str
) -> None:
    env = env_for(sim, tmp_path, **extra)
    rc, out, err = await run_cli(["check"], env, tmp_path)
    assert rc == 3
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert variable in lines[0]
    assert "dev-secret" not in err and "shop-secret" not in err
    assert "Traceback" not in err


async def test_no_scope_configured(tmp_path: Path) -> None:
    rc, _, err = await run_cli(["check"], {}, tmp_path)
    assert rc == 3
    assert "JPUSH_DEV_KEY" in err and len(err.strip().splitlines()) == 1


async def test_env_file_is_read_and_missing_one_is_an_error(
    sim: JPushSimulator, tmp_path: Path
) -> None:
    env = env_for(sim, tmp_path)
    env_file = tmp_path / "bot.env"
    env_file.write_text("\n".join(f"{k}='{v}'" for k, v in env.items()) + "\n")
    rc, out, err = await run_cli(["check", "--json", "--env-file", str(env_file)], {}, tmp_path)
    assert rc == 0, err
    assert json.loads(out)["status"] == "ok"
    rc, _, err = await run_cli(["check", "--env-file", str(tmp_path / "nope.env")], {}, tmp_path)
    assert rc == 3 and "--env-file" in err


async def test_python_dash_m_is_the_same_program(sim: JPushSimulator, tmp_path: Path) -> None:
    import asyncio
    import sys

    from botproc import clean_env

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "check",
        "--json",
        env=clean_env(env_for(sim, tmp_path)),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert json.loads(out)["status"] == "ok"
