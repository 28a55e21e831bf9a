//! Tests of the key inventory (`inventory.rs`).

use super::*;
use crate::key::range_of;
use crate::state::testing::{after, rows, users, TempDir};

#[tokio::test]
async fn checkpoints_keep_the_inventory_and_deletes_leave_it() {
    let dir = TempDir::new();
    let store = dir.open().await;
    let mut state = users(&store).await;
    store.start_inventory(&mut state).await.unwrap();
    store.finish_inventory(&mut state).await.unwrap();
    let end = after("i:5", "i:5");
    store.begin_batch(&mut state, "b1", &end).await.unwrap();
    let none = Delivered::default();
    store
        .commit_batch(&mut state, &end, &rows(5), &none, Usage::default())
        .await
        .unwrap();
    // Logged with the checkpoint, in the inventory once folded.
    assert_eq!(store.inventory_len("users").await.unwrap(), 0);
    assert_eq!(store.fold_key_log("users").await.unwrap(), 5);
    assert_eq!(store.fold_key_log("users").await.unwrap(), 0);
    assert_eq!(store.inventory_len("users").await.unwrap(), 5);
    // The same keys again (updates) change nothing.
    store
        .commit_batch(&mut state, &end, &rows(3), &none, Usage::default())
        .await
        .unwrap();
    store.fold_key_log("users").await.unwrap();
    let digests = store.inventory_digests("users", 1).await.unwrap();
    let keys: Vec<Key> = (1..=5)
        .map(|id| Key::from_text(&id.to_string(), true))
        .collect();
    assert_eq!(digests, crate::source::keys::digests_of(&keys, 1));
    let range = range_of(keys[0].hash(), 1);
    let in_range = store
        .inventory_keys("users", (1, &[range][..]), None, 10)
        .await
        .unwrap();
    assert!(in_range.contains(&keys[0]), "{in_range:?}");
    assert!(in_range.iter().all(|key| range_of(key.hash(), 1) == range));
    // Paged in key order.
    let both = store
        .inventory_keys("users", (1, &[0, 1][..]), None, 5)
        .await
        .unwrap();
    assert_eq!(both, keys);
    let rest = store
        .inventory_keys("users", (1, &[0, 1][..]), Some(&keys[2]), 2)
        .await
        .unwrap();
    assert_eq!(rest, keys[3..5]);

    store
        .begin_deletes("users", "d1", &keys[..2])
        .await
        .unwrap();
    let pending = store.pending_deletes("users").await.unwrap().unwrap();
    assert_eq!(pending, ("d1".to_owned(), keys[..2].to_vec()));
    // Key 2 was back when the batch was confirmed: only key 1 is gone.
    store
        .commit_deletes(
            &mut state,
            "d1",
            (&keys[..1], &keys[1..2]),
            &none,
            Usage::default(),
        )
        .await
        .unwrap();
    assert_eq!(store.pending_deletes("users").await.unwrap(), None);
    assert_eq!(store.inventory_len("users").await.unwrap(), 4);
    let stored = store.load("users").await.unwrap().unwrap();
    assert_eq!(stored.deletes.deletes_detected, 1);
    assert!(stored.deletes.inventory);
    assert_eq!(stored.rows_synced, 5 + 3 + 1);

    store.drop_inventory(&mut state).await.unwrap();
    assert_eq!(store.inventory_len("users").await.unwrap(), 0);
    assert!(
        !store
            .load("users")
            .await
            .unwrap()
            .unwrap()
            .deletes
            .inventory
    );
}
