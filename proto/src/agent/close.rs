//! Why a master closes an agent's QUIC connection: the application error
//! code it closes with (the reason travels beside it as text, for the
//! agent's log).

/// The node's certificate names a node that is not a member of the
/// cluster: its Node was deleted, or deleted and created again (a
/// certificate issued for the earlier one stays void). Nothing the agent
/// can do with this certificate will work again; it must join again with
/// a bootstrap token.
pub const NOT_A_MEMBER: u32 = 0x4e4d;

/// The master cannot tell now whether the node is a member (it cannot
/// read the store); another master may.
pub const CANNOT_CHECK: u32 = 0x4e43;
