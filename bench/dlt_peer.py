"""The peer a user would otherwise assemble: a dlt pipeline paging the same simulator and merging
into the same PostgreSQL with type-2 history (``merge`` + ``scd2``), for `make bench`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dlt
import requests


def run_dlt(
    base_url: str,
    appid: str,
    secret: str,
    miniprogram_appid: str,
    pg_url: str,
    dataset: str,
    pipelines_dir: str,
) -> float:
    """Run the pipeline once; return its wall time in seconds."""
    session = requests.Session()

    @dlt.resource(
        name="rules",
        primary_key="prefix",
        write_disposition={"disposition": "merge", "strategy": "scd2"},
    )
    def rules() -> Iterator[list[dict[str, Any]]]:
        token = session.post(
            f"{base_url}/cgi-bin/stable_token",
            json={"grant_type": "client_credential", "appid": appid, "secret": secret},
            timeout=30,
        ).json()["access_token"]
        page = 1
        while True:
            answer = session.post(
                f"{base_url}/cgi-bin/wxopen/qrcodejumpget",
                params={"access_token": token},
                json={
                    "appid": miniprogram_appid,
                    "get_type": 2,
                    "page_num": page,
                    "page_size": 200,
                },
                timeout=30,
            ).json()
            listed = answer["rule_list"]
            if listed:
                yield listed
            if len(listed) < 200:
                return
            page += 1

    pipeline = dlt.pipeline(
        pipeline_name=f"qrsync_bench_{dataset}",
        destination=dlt.destinations.postgres(credentials=pg_url),
        dataset_name=dataset,
        pipelines_dir=pipelines_dir,
    )
    started = time.perf_counter()
    pipeline.run(rules())
    return time.perf_counter() - started
