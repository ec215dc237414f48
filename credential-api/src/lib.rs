//! geoturn-api: the REST service that answers web apps with ICE servers, and the tools around
//! it. So far: [`candidates`] (registry records as ranking input) and [`route`] (`geoturn
//! route`, the ranking for one client address with its explanation). The HTTP service itself
//! comes with the rest of the credential-API issue.

pub mod candidates;
pub mod route;
