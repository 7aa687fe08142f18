//! graphql-gateway on its own: the HTTP face with no service behind it (operations that need
//! one fail after authentication, which is what these tests look at).
mod helpers;
mod jwks;
