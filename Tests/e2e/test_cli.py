"""The AWS CLI against Trent. The CLI is slow to start, so this file makes only a handful of calls."""

from __future__ import annotations

import base64
import os
import uuid

from trent_e2e import ACCOUNT_ID, is_uuid, key_arn, remember_plaintext, unique_alias


def test_cli_create_encrypt_decrypt_describe(aws_cli, kms, tmp_path):
    rc, out, err = aws_cli("create-key", "--description", "created by the AWS CLI")
    assert rc == 0, err
    md = out["KeyMetadata"]
    key_id = md["KeyId"]
    assert is_uuid(key_id)
    assert md["Arn"] == key_arn(key_id)
    assert md["AWSAccountId"] == ACCOUNT_ID
    assert md["KeyState"] == "Enabled"
    assert md["Description"] == "created by the AWS CLI"

    plaintext = b"AWS CLI round trip \x00\x01\x02 " + os.urandom(16)
    remember_plaintext(plaintext)
    pt_file = tmp_path / "plaintext.bin"
    pt_file.write_bytes(plaintext)
    rc, out, err = aws_cli(
        "encrypt", "--key-id", key_id, "--plaintext", f"fileb://{pt_file}",
        "--encryption-context", "app=e2e,tool=cli",
    )
    assert rc == 0, err
    assert out["KeyId"] == key_arn(key_id)
    assert out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = base64.b64decode(out["CiphertextBlob"], validate=True)
    assert blob[0] == 1 and blob[1:17] == uuid.UUID(key_id).bytes

    ct_file = tmp_path / "ciphertext.bin"
    ct_file.write_bytes(blob)
    rc, out, err = aws_cli(
        "decrypt", "--ciphertext-blob", f"fileb://{ct_file}", "--encryption-context", "app=e2e,tool=cli"
    )
    assert rc == 0, err
    assert base64.b64decode(out["Plaintext"], validate=True) == plaintext
    assert out["KeyId"] == key_arn(key_id)

    # the SDK decrypts what the CLI encrypted
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "e2e", "tool": "cli"})["Plaintext"] == plaintext

    alias = unique_alias("cli")
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    rc, out, err = aws_cli("describe-key", "--key-id", alias)
    assert rc == 0, err
    assert out["KeyMetadata"]["KeyId"] == key_id
    assert out["KeyMetadata"]["Arn"] == key_arn(key_id)


def test_cli_error_is_reported(aws_cli):
    rc, out, err = aws_cli("describe-key", "--key-id", str(uuid.uuid4()))
    assert rc != 0
    assert out is None
    assert "NotFoundException" in err, err
