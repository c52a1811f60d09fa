"""The three sites with message bodies in Garage (one node per site, replication factor 3):
losing the primary's site, Garage node included, loses no body and fails no sender."""

import time

import pytest

from clusterctl import report, running_cluster, wait_for
from load import Load, hostport, imap_login, message

ACCOUNTS = [f"g{i}@cluster.test" for i in range(3)]
PASSWORD = "garage-secret"


@pytest.fixture(scope="module")
def cluster():
    with running_cluster(ACCOUNTS, PASSWORD, "--blobs", "garage") as c:
        yield c


@pytest.mark.timeout(900)
def test_bodies_in_garage_survive_the_loss_of_a_site(cluster, capsys):
    endpoints = cluster.endpoints()
    assert all("s3" in e for e in endpoints["sites"].values()), endpoints
    load = Load(endpoints, ACCOUNTS, PASSWORD, senders=3, readers=1).start()
    try:
        time.sleep(8)
        site = cluster.primary()
        cluster.run("kill", site)
        t0 = time.monotonic()
        survivors = [s for s in endpoints["sites"] if s != site]
        first_ack = wait_for("a delivery through the survivors",
                             lambda: load.first_ack_after(t0, survivors), 120)
        time.sleep(8)
        cluster.run("revive", site)
        wait_for(f"site {site} to catch up", cluster.caught_up, 180)
        time.sleep(3)
    finally:
        load.stop()
    assert not load.permanent, load.permanent[:10]
    assert not load.uid_conflicts, load.uid_conflicts[:10]
    # Every acknowledged body, byte for byte, read through the site that was lost and is back.
    wrong = []
    for account in ACCOUNTS:
        m = imap_login(*hostport(endpoints["sites"][site]["imap"]), account, PASSWORD)
        try:
            m.select("INBOX", readonly=True)
            typ, data = m.fetch("1:*", "(BODY.PEEK[])")
            assert typ == "OK", data
        finally:
            m.logout()
        bodies = [item[1] for item in data if isinstance(item, tuple)]
        # The server adds its Received: line on top; the rest is the sender's bytes.
        stored = {}
        for b in bodies:
            start = b.find(b"From: ")
            stored.setdefault(b[start:], 0)
            stored[b[start:]] += 1
        for seq, (to, _, _) in load.acked.items():
            if to == account and stored.get(message(seq, to)) != 1:
                wrong.append((seq, to))
    report(capsys, {"garage_kill": {"site": site, "first_ack_s": round(first_ack, 1),
                                    "messages_acknowledged": len(load.acked)}})
    assert not wrong, f"{len(wrong)} acknowledged bodies missing or duplicated: {wrong[:10]}"
    assert first_ack < 60
