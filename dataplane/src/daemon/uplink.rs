//! The uplink's addresses as the host changes them: the addresses masqueraded to follow
//! the uplink's IPv4 address and its global IPv6 address, as MASQUERADE takes the address
//! at each new flow. A host often has no global
//! IPv6 address yet when the daemon starts (SLAAC, DHCPv6), and DHCP moves IPv4 ones.

use anyhow::Result;

use super::{Core, Shared};
use crate::{nat, netlink::AddressEvents};

/// Follows the address changes of the daemon's namespace until the subscription ends.
pub(super) async fn follow_addresses(core: Shared, mut events: AddressEvents) {
    while let Some(index) = events.next().await {
        let mut core = core.lock().await;
        if core.masquerade.as_ref().is_some_and(|m| m.uplink.index == index)
            && let Err(e) = core.reread_uplink_addresses().await
        {
            log::warn!("the uplink's addresses changed, and the masquerade kept the old ones: {e:#}");
        }
    }
}

impl Core {
    /// Takes the uplink's addresses as they are now into the programs' NAT settings. An
    /// uplink without an IPv4 address keeps the last one until it has one again: there is
    /// nothing better to masquerade as, and the flows of the old one may still be answered.
    async fn reread_uplink_addresses(&mut self) -> Result<()> {
        let Some(masquerade) = self.masquerade.as_mut() else {
            return Ok(());
        };
        let (addr, addr6) = nat::uplink_addresses(&self.netlink, masquerade.uplink.index).await?;
        let uplink = &mut masquerade.uplink;
        let mut changed = uplink.clone();
        changed.addr = addr.unwrap_or(uplink.addr);
        changed.addr6 = addr6;
        if changed == *uplink {
            return Ok(());
        }
        if addr.is_none() {
            log::warn!(
                "uplink {} has no IPv4 address: masquerading as {} until it has one",
                uplink.name,
                uplink.addr
            );
        }
        log::info!(
            "uplink {} now masquerades as {}{}",
            changed.name,
            changed.addr,
            changed.addr6.map(|a| format!(" and {a}")).unwrap_or_else(|| ", IPv6 not masqueraded".into())
        );
        *uplink = changed;
        let config = nat::config(uplink, masquerade.ports);
        self.datapath.set_nat_config(config)
    }
}
