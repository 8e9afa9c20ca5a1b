"""State survives a restart: keys, aliases, tags, key states and ciphertexts (own server, own data folder)."""

from __future__ import annotations

from trent_e2e import expect_error, key_arn, make_kms, tags_dict


def test_state_survives_restart(make_server):
    server = make_server()
    kms = make_kms(server)

    main = kms.create_key(Description="persistent", Tags=[{"TagKey": "owner", "TagValue": "e2e"}])["KeyMetadata"]
    key_id = main["KeyId"]
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "stage", "TagValue": "test"}])
    alias = "alias/e2e-persistent"
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)

    disabled = kms.create_key(Description="disabled")["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=disabled)
    doomed = kms.create_key(Description="pending deletion")["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)

    context = {"persist": "yes"}
    plaintext = b"written before the restart"
    blob = kms.encrypt(KeyId=alias, Plaintext=plaintext, EncryptionContext=context)["CiphertextBlob"]
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")

    def snapshot():
        return {
            "keys": {k: kms.describe_key(KeyId=k)["KeyMetadata"] for k in (key_id, disabled, doomed)},
            "key_list": sorted(e["KeyId"] for e in kms.list_keys(Limit=1000)["Keys"]),
            "aliases": sorted(
                (a["AliasName"], a["TargetKeyId"], a["AliasArn"]) for a in kms.list_aliases(Limit=100)["Aliases"]
            ),
            "tags": tags_dict(kms.list_resource_tags(KeyId=key_id)["Tags"]),
        }

    before = snapshot()
    assert before["keys"][disabled]["KeyState"] == "Disabled"
    assert before["keys"][doomed]["KeyState"] == "PendingDeletion"
    assert before["tags"] == {"owner": "e2e", "stage": "test"}
    assert (alias, key_id) in {(a[0], a[1]) for a in before["aliases"]}

    server.restart()
    kms = make_kms(server)

    after = snapshot()
    assert after == before

    dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
    assert dec["Plaintext"] == plaintext
    assert dec["KeyId"] == key_arn(key_id)
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]

    fresh = kms.encrypt(KeyId=key_id, Plaintext=b"written after the restart")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=fresh)["Plaintext"] == b"written after the restart"

    # states still behave, not just read back
    with expect_error("DisabledException"):
        kms.encrypt(KeyId=disabled, Plaintext=b"x")
    with expect_error("KMSInvalidStateException"):
        kms.encrypt(KeyId=doomed, Plaintext=b"x")

    # a second restart: state written after the first restart persists too
    kms.enable_key(KeyId=disabled)
    server.restart()
    kms = make_kms(server)
    assert kms.describe_key(KeyId=disabled)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=fresh)["Plaintext"] == b"written after the restart"
