"""The S3 part size chosen per file: any object S3 takes fits in its 10,000 parts."""

from __future__ import annotations

import io

import pytest

from connectors.errors import Unsupported
from connectors.s3 import S3_MAX_OBJECT_SIZE, S3_MAX_PART_SIZE, S3_MAX_PARTS, S3Connector
from connectors.transfer import part_size_of

MIB = 1024**2
GIB = 1024**3


def connector(**settings: int) -> S3Connector:
    return S3Connector("S3", bucket="b", region_name="eu-central-1", **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "part"),
    [
        (None, 8 * MIB),  # unknown: the configured one
        (0, 8 * MIB),
        (78 * GIB, 8 * MIB),  # 10,000 parts of 8 MiB hold 78.1 GiB
        (79 * GIB, 16 * MIB),
        (90 * GIB, 16 * MIB),
        (200 * GIB, 32 * MIB),
        (S3_MAX_OBJECT_SIZE, 1024 * MIB),
    ],
)
def test_the_configured_part_size_doubles_until_the_file_fits(size: int | None, part: int) -> None:
    s3 = connector()
    assert s3.part_size_for(size) == part
    assert part_size_of(s3, size) == part  # the transfer engine hashes with the same parts


def test_every_size_s3_takes_fits_in_its_parts_from_any_configured_part_size() -> None:
    for configured in (5 * MIB, 8 * MIB, 100 * MIB, 3 * GIB):
        s3 = connector(multipart_chunksize=configured)
        for size in (configured, 10 * GIB, 123_456_789_012, 4 * 1024**4, S3_MAX_OBJECT_SIZE):
            part = s3.part_size_for(size)
            assert configured <= part <= S3_MAX_PART_SIZE
            assert part * S3_MAX_PARTS >= size, (configured, size)
            assert part == configured or (part // 2) * S3_MAX_PARTS < size  # no larger than needed


def test_more_than_s3_stores_in_one_object_is_refused_before_any_request() -> None:
    with pytest.raises(Unsupported, match="more than S3 stores in one object"):
        connector().write("a/huge", io.BytesIO(b""), size=S3_MAX_OBJECT_SIZE + 1)
