"""Concurrent changes to one key (issue #11, E3): each change writes only what it changes.

One boto3 client loops UpdateKeyDescription on a key in a thread while a second client changes the same key's
policy, state, rotation and deletion schedule. No committed change may be undone by a description update that
read the key before it, and once ScheduleKeyDeletion has answered the deletion stays scheduled (later
description updates are refused with KMSInvalidStateException, as for any key pending deletion).
"""

from __future__ import annotations

import json
import threading
import time

from botocore.exceptions import ClientError

from trent_e2e import ACCOUNT_ID, make_kms

SETTLE = 0.02  # seconds the description loop gets to undo a change before it is checked


def policy(n: int) -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Id": f"concurrent-{n}",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }],
    })


class DescriptionLoop:
    """UpdateKeyDescription on `key_id` as fast as one connection allows, until stopped."""

    def __init__(self, server, key_id: str):
        self.kms = make_kms(server)
        self.key_id = key_id
        self.stop_event = threading.Event()
        self.done = 0
        self.refused = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        deadline = time.monotonic() + 30  # bounded even if the test forgets to stop it
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                self.kms.update_key_description(KeyId=self.key_id, Description=f"loop-{n}")
                self.done += 1
            except ClientError as error:
                code = error.response["Error"]["Code"]
                if code == "KMSInvalidStateException":
                    self.refused += 1
                else:
                    self.errors.append(code)

    def __enter__(self) -> "DescriptionLoop":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


def test_description_updates_undo_no_policy_state_or_rotation_change(server):
    writer = make_kms(server)
    key_id = writer.create_key(Description="concurrent")["KeyMetadata"]["KeyId"]
    undone: list[str] = []
    with DescriptionLoop(server, key_id) as loop:
        time.sleep(0.05)
        for n in range(30):
            text = policy(n)
            writer.put_key_policy(KeyId=key_id, PolicyName="default", Policy=text)
            time.sleep(SETTLE)
            if writer.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"] != text:
                undone.append(f"PutKeyPolicy #{n}")
            if n % 3 == 0:
                disable = n % 2 == 0
                (writer.disable_key if disable else writer.enable_key)(KeyId=key_id)
                time.sleep(SETTLE)
                state = writer.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
                if state != ("Disabled" if disable else "Enabled"):
                    undone.append(f"{'DisableKey' if disable else 'EnableKey'} #{n} (found {state})")
        writer.enable_key(KeyId=key_id)
        for n in range(5):
            writer.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90 + n)
            time.sleep(SETTLE)
            status = writer.get_key_rotation_status(KeyId=key_id)
            if not status["KeyRotationEnabled"] or status.get("RotationPeriodInDays") != 90 + n:
                undone.append(f"EnableKeyRotation #{n}")
    assert loop.errors == []
    assert loop.done > 0, "the description loop ran"
    assert undone == [], f"changes undone by a concurrent UpdateKeyDescription: {undone}"


def test_a_scheduled_deletion_is_never_cleared_by_a_description_update(server):
    writer = make_kms(server)
    cleared: list[str] = []
    refused: list[int] = []
    for attempt in range(10):
        key_id = writer.create_key(Description="concurrent deletion")["KeyMetadata"]["KeyId"]
        with DescriptionLoop(server, key_id) as loop:
            time.sleep(0.03)
            scheduled = writer.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
            description = writer.describe_key(KeyId=key_id)["KeyMetadata"]["Description"]
            time.sleep(0.1)
        md = writer.describe_key(KeyId=key_id)["KeyMetadata"]
        if md["KeyState"] != "PendingDeletion" or md.get("DeletionDate") != scheduled["DeletionDate"]:
            cleared.append(f"#{attempt}: {md['KeyState']}, DeletionDate {md.get('DeletionDate')}")
        elif md["Description"] != description:
            cleared.append(f"#{attempt}: description changed after the deletion was scheduled")
        assert loop.errors == []
        refused.append(loop.refused)
        if md["KeyState"] == "PendingDeletion":
            writer.cancel_key_deletion(KeyId=key_id)
    assert cleared == [], f"scheduled deletions undone by concurrent description updates: {cleared}"
    assert all(refused), f"description updates of a key pending deletion are refused: {refused}"
