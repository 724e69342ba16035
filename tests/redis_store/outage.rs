//! Redis down, a node of a cluster down, nothing listening: calls fail closed
//! within their bound, and the store comes back on its own.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_closed_while_redis_is_down_and_recovers() {
    let mut server = RedisServer::start();
    let store = store(&config(server.url(), "outage")).await;
    store.create_task(task("before")).await.unwrap();

    server.stop();
    for attempt in 0..3 {
        let started = Instant::now();
        let result = store.create_task(task(&format!("during-{attempt}"))).await;
        let took = started.elapsed();
        eprintln!("write {attempt} while down: {result:?} after {took:?}");
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "write {attempt} while down: {result:?}");
        assert!(took < Duration::from_millis(1500), "write {attempt} failed after {took:?}");
        let started = Instant::now();
        let result = store.get_task("before").await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "read {attempt} while down: {result:?}");
        assert!(started.elapsed() < Duration::from_millis(1500), "read {attempt} failed too slowly");
    }
    assert!(matches!(store.health().await, Err(StoreError::Unavailable(_))));

    // Back, empty (nothing was persisted): the same store works again.
    server.restart();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(10);
    while store.health().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("healthy again {:?} after the restart", restarted.elapsed());
    store.create_task(task("after")).await.expect("a write after Redis came back");
    assert_eq!(store.get_task("after").await.unwrap().unwrap().id, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_fails_quickly_when_nothing_listens() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let started = Instant::now();
    let result = RedisStore::open(&config(url, "nothing")).await;
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{:?}", result.err());
    assert!(started.elapsed() < Duration::from_millis(1500), "open failed after {:?}", started.elapsed());
    let invalid = RedisStore::open(&config("http://127.0.0.1:1".into(), "x")).await;
    assert!(matches!(invalid, Err(StoreError::Unavailable(message)) if message.contains("URL")));
}

/// Redis down for longer than the connection keeps retrying: the store
/// still comes back on its own once Redis does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_a_long_outage() {
    let mut server = RedisServer::start();
    let store = store(&config(server.url(), "long-outage")).await;
    server.stop();
    let outage = Instant::now() + Duration::from_secs(12);
    while Instant::now() < outage {
        let started = Instant::now();
        let result = store.create_task(task("during")).await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_millis(1500), "failed after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    server.restart();
    let restarted = Instant::now();
    let mut failures = 0;
    while let Err(error) = store.create_task(task("after")).await {
        failures += 1;
        eprintln!("after restart: {error}");
        assert!(
            restarted.elapsed() < Duration::from_secs(3),
            "not back {:?} after the restart",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("back after {:?}, {failures} failed calls", restarted.elapsed());
}

/// A cluster whose node for the namespace is down fails closed, and the
/// store works again once the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_fails_closed_and_recovers() {
    let mut cluster = RedisCluster::start();
    let store =
        store(&RedisConfig { namespace: "outage".into(), ..RedisConfig::cluster(cluster.urls()) }).await;
    store.create_task(task("before")).await.unwrap();
    let slot = cluster.nodes()[0].cli(&["cluster", "keyslot", "writ:{outage}:"]);
    let owner = cluster.nodes().iter().position(|node| node.cli(&["dbsize"]).trim() != "0").unwrap();
    eprintln!("slot {} on node {owner}", slot.trim());

    cluster.node_mut(owner).stop();
    for attempt in 0..3 {
        let started = Instant::now();
        let result = store.create_task(task(&format!("during-{attempt}"))).await;
        eprintln!("write {attempt} while down: {result:?} after {:?}", started.elapsed());
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_millis(1500), "failed after {:?}", started.elapsed());
    }

    cluster.node_mut(owner).restart();
    let restarted = Instant::now();
    while let Err(error) = store.health().await {
        eprintln!("after restart: {error}");
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "not back {:?} after the restart",
            restarted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("back after {:?}", restarted.elapsed());
    store.create_task(task("after")).await.unwrap();
}
