//! Where a task's records live, and how an id says so.
//!
//! A store spread over shards (the Redis store with `shards > 1`) keeps a
//! task, its leases and its approval requests together in the shard its
//! task id picks, so that every change to them stays one atomic step. A
//! lease or approval id must then lead to the same shard without a lookup:
//! every such id Writ makes carries its task's route in its last two bytes.
//!
//! The route is the CRC-16 (XMODEM) of the task id, the checksum Redis
//! Cluster hashes keys with; a store picks shard `route % shards`. The ids
//! stay UUID version 7 (time-ordered): the route replaces 16 of their 74
//! random bits, leaving 58, so two ids of one task minted in one
//! millisecond collide with a chance of about 2^-58.
//!
//! Ids made otherwise (before this scheme, or by a test) are still found:
//! a store looks in the shard the id names first, then in the others.

use uuid::Uuid;

/// A task id's route: 16 bits every shard count divides alike.
pub fn task_route(task_id: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(task_id.as_bytes())
}

/// The route an id carries (meaningful for ids from [`id_for_task`]).
pub fn id_route(id: Uuid) -> u16 {
    let bytes = id.as_bytes();
    u16::from_be_bytes([bytes[14], bytes[15]])
}

/// A new time-ordered id for a lease or approval request of `task_id`.
pub fn id_for_task(task_id: &str) -> Uuid {
    let mut bytes = Uuid::now_v7().into_bytes();
    bytes[14..].copy_from_slice(&task_route(task_id).to_be_bytes());
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_task_route_and_stay_version_7() {
        for task in ["t-1", "orders-2026-12-06", "", "ünïcode"] {
            let id = id_for_task(task);
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(id_route(id), task_route(task));
        }
        // Later ids still sort later: the route sits after the time.
        let (a, b) = (id_for_task("zzz"), id_for_task("aaa"));
        assert!(a.as_bytes()[..6] <= b.as_bytes()[..6]);
        assert_ne!(id_for_task("t"), id_for_task("t"));
    }

    #[test]
    fn routes_match_redis_cluster_key_slots() {
        // Redis Cluster's documented reference value: CRC16("123456789")
        // is 0x31C3, and `CLUSTER KEYSLOT` is that mod 16384.
        assert_eq!(task_route("123456789"), 0x31C3);
    }
}
