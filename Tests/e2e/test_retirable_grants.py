"""ListRetirableGrants stays in the caller's account (issue #11, E4).

AWS: "Returns information about all grants in the Amazon Web Services account and Region that have the specified
retiring principal" -- a grant belongs to its key's account. An integrated service principal
(rds.us-east-1.amazonaws.com) belongs to no account, so when it is the retiring principal of grants in two accounts,
each account lists only the grants on its own keys. A retiring principal that is an ARN must be of the caller's
account, and then its grants on other accounts' keys are listed too (cross-account grants, as AWS documents). The
service calling as itself belongs to no account: it has no identity policy that could allow
kms:ListRetirableGrants, so it is denied, like any account-level action it tries (ListKeys).
"""

from __future__ import annotations

import pytest

from trent_e2e import ADMIN_POLICY, expect_denied, make_forwarding_kms

RDS = "rds.us-east-1.amazonaws.com"


@pytest.fixture(scope="module")
def accounts(ids):
    a, b = ids.account("retirable-a"), ids.account("retirable-b")
    return {
        a: ids.user(a, "retirable-admin", ADMIN_POLICY),
        b: ids.user(b, "retirable-admin", ADMIN_POLICY),
    }


def retirable(client, principal: str) -> dict[str, str]:
    """Every grant the client lists for `principal` (all pages), grant id -> key id."""
    out: dict[str, str] = {}
    marker = None
    while True:
        page = client.list_retirable_grants(RetiringPrincipal=principal, Limit=1, **({"Marker": marker} if marker else {}))
        out.update({g["GrantId"]: g["KeyId"] for g in page["Grants"]})
        if not page["Truncated"]:
            return out
        marker = page["NextMarker"]


def test_a_service_retiring_principal_lists_only_the_callers_account(ids, accounts):
    service = ids.service(RDS)
    mine: dict[str, dict[str, str]] = {}
    for account, admin in accounts.items():
        mine[account] = {}
        for n in range(2):
            key = admin.kms.create_key(Description=f"retirable {n}")["KeyMetadata"]["Arn"]
            grant = admin.kms.create_grant(KeyId=key, GranteePrincipal=RDS, RetiringPrincipal=RDS, Operations=["Decrypt"])
            mine[account][grant["GrantId"]] = key
    for account, admin in accounts.items():
        listed = retirable(admin.kms, RDS)
        assert set(listed) >= set(mine[account]), "the account's own grants are listed"
        others = {g for a, grants in mine.items() if a != account for g in grants}
        assert not set(listed) & others, f"account {account} lists grants of another account"
        assert all(f":{account}:key/" in key for key in listed.values()), listed
        # The same through the service on the admin's behalf: still the admin's account.
        via = make_forwarding_kms(ids.server, service, admin.authorize_service(RDS))
        assert set(retirable(via, RDS)) == set(listed)

    # The service itself belongs to no account: nothing in "the caller's account" to list, and no identity policy
    # allows it kms:ListRetirableGrants.
    with expect_denied(service.arn, "kms:ListRetirableGrants", "*", "no-identity"):
        service.kms.list_retirable_grants(RetiringPrincipal=RDS)


def test_an_arn_retiring_principal_lists_its_cross_account_grants(ids, accounts):
    (a, admin_a), (b, admin_b) = accounts.items()
    retiring = ids.user(a, "retirable-retirer")
    own = admin_a.kms.create_key(Description="retirable own")["KeyMetadata"]["Arn"]
    foreign = admin_b.kms.create_key(Description="retirable foreign")["KeyMetadata"]["Arn"]
    expected = {
        admin_a.kms.create_grant(KeyId=own, GranteePrincipal=retiring.arn, RetiringPrincipal=retiring.arn,
                                 Operations=["Encrypt"])["GrantId"]: own,
        admin_b.kms.create_grant(KeyId=foreign, GranteePrincipal=retiring.arn, RetiringPrincipal=retiring.arn,
                                 Operations=["Encrypt"])["GrantId"]: foreign,
    }
    assert retirable(admin_a.kms, retiring.arn) == expected
    # A principal of another account is not B's to ask about, named by ARN or by account id.
    for principal in (retiring.arn, a):
        with expect_denied(what=principal):
            admin_b.kms.list_retirable_grants(RetiringPrincipal=principal)
