//! `#[derive(Dependencies)]`, `#[derive(Condition)]` and `#[cached]` for
//! [matroska-cache](https://docs.rs/matroska-cache): use them through
//! `matroska_cache::Dependencies`, `matroska_cache::scopes::Condition` and
//! `matroska_cache::cached` with the crate's
//! `derive` feature, where they are documented with examples.
//!
//! `#[derive(Dependencies)]` reads `#[deps(...)]` attributes:
//!
//! - on the type: `id = "kind"` (the value depends on `id:<kind>:<key>`) or
//!   `pk = "model"` (on `pk:<model>:<key>[:<key>...]`, for composite keys);
//! - on fields: `key` (a key column, in order), `skip` (not walked).
//!
//! Every other field is walked for nested dependencies, so its type must implement
//! `Dependencies` (plain data such as numbers and strings does, with none); a field that
//! cannot is a compile error pointing at it.

mod cached;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitStr};

/// Caches an async fn through a `MatroskaCache`; see `matroska_cache::cached`, where it is
/// documented with examples.
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    match cached::expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// Derives `matroska_cache::Dependencies`; see the trait's documentation.
#[proc_macro_derive(Dependencies, attributes(deps))]
pub fn derive_dependencies(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// Derives `matroska_cache::scopes::Condition`: `PARAMS` are the struct's field names as
/// serde serializes them (`#[serde(rename = "...")]` is honoured), so they cannot drift
/// from the struct.
#[proc_macro_derive(Condition, attributes(serde))]
pub fn derive_condition(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand_condition(&input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand_condition(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "a Condition is a struct with one named field per parameter",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new(
            input.ident.span(),
            "a Condition is a struct with one named field per parameter",
        ));
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") || meta.path.is_ident("rename_all_fields") {
                return Err(meta.error(
                    "derive(Condition) does not follow rename_all; rename each field, or \
                     implement Condition by hand",
                ));
            }
            skip_value(&meta)
        })?;
    }
    let mut names = Vec::new();
    for field in &fields.named {
        let mut name = field.ident.as_ref().expect("named field").to_string();
        if let Some(raw) = name.strip_prefix("r#") {
            name = raw.to_owned();
        }
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("serde")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    if let Ok(value) = meta.value() {
                        if value.fork().parse::<LitStr>().is_ok() {
                            name = value.parse::<LitStr>()?.value();
                            return Ok(());
                        }
                    }
                    return Err(
                        meta.error("derive(Condition) follows #[serde(rename = \"...\")] only")
                    );
                }
                for varying in ["skip", "skip_serializing", "skip_serializing_if", "flatten"] {
                    if meta.path.is_ident(varying) {
                        return Err(meta.error(format!(
                            "a condition parameter is always present: #[serde({varying})] \
                             would change the parameter names"
                        )));
                    }
                }
                skip_value(&meta)
            })?;
        }
        names.push(name);
    }
    let name = &input.ident;
    let mut generics = input.generics.clone();
    let (_, type_generics, _) = input.generics.split_for_impl();
    generics
        .make_where_clause()
        .predicates
        .push(syn::parse_quote!(
            #name #type_generics: ::matroska_cache::__private::serde::Serialize + 'static
        ));
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::matroska_cache::scopes::Condition for #name #type_generics #where_clause {
            const PARAMS: &'static [&'static str] = &[#(#names),*];
        }
    })
}

/// Consumes the value of a serde option this macro does not care about.
fn skip_value(meta: &syn::meta::ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: TokenStream2 = content.parse()?;
    }
    Ok(())
}

/// The type-level attribute: which dependency the value itself stands for.
enum Own {
    None,
    Id(LitStr),
    Pk(LitStr),
}

/// What a field is.
enum Role {
    Walk,
    Key,
    Skip,
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let own = own_attribute(input)?;
    let krate = quote!(::matroska_cache);
    let body = match &input.data {
        Data::Struct(data) => {
            let mut keys = Vec::new();
            let mut walks = Vec::new();
            for (index, field) in data.fields.iter().enumerate() {
                // Spanned at the field's type, so trait errors about it point there.
                let span = field.ty.span();
                let access = match &field.ident {
                    Some(name) => quote_spanned!(span=> self.#name),
                    None => {
                        let index = syn::Index {
                            index: index as u32,
                            span,
                        };
                        quote_spanned!(span=> self.#index)
                    }
                };
                match field_role(field)? {
                    Role::Skip => {}
                    Role::Key => keys.push((field, access)),
                    Role::Walk => walks.push(walk(field, access)),
                }
            }
            let own = own_dep(&own, &keys, input)?;
            quote!(#own #(#walks)*)
        }
        Data::Enum(data) => {
            if !matches!(own, Own::None) {
                return Err(syn::Error::new(
                    Span::call_site(),
                    "#[deps(id/pk)] applies to structs; put it on the struct inside the variant",
                ));
            }
            let arms =
                data.variants
                    .iter()
                    .map(|variant| {
                        let name = &variant.ident;
                        let mut bindings = Vec::new();
                        let mut walks = Vec::new();
                        for (index, field) in variant.fields.iter().enumerate() {
                            let binding = syn::Ident::new(&format!("__field{index}"), field.span());
                            match field_role(field)? {
                                Role::Key => return Err(syn::Error::new(
                                    field.span(),
                                    "#[deps(key)] is not supported in enums; give the variant a \
                                     struct with #[deps(id = \"...\")]",
                                )),
                                Role::Skip => {}
                                Role::Walk => walks.push(walk(field, quote!(*#binding))),
                            }
                            bindings.push((field, binding));
                        }
                        let pattern = match &variant.fields {
                            Fields::Named(_) => {
                                let parts = bindings.iter().map(|(field, binding)| {
                                    let name = field.ident.as_ref().expect("named field");
                                    quote!(#name: #binding)
                                });
                                quote!(Self::#name { #(#parts),* })
                            }
                            Fields::Unnamed(_) => {
                                let parts = bindings.iter().map(|(_, binding)| binding);
                                quote!(Self::#name ( #(#parts),* ))
                            }
                            Fields::Unit => quote!(Self::#name),
                        };
                        Ok(quote!(#[allow(unused_variables)] #pattern => { #(#walks)* }))
                    })
                    .collect::<syn::Result<Vec<_>>>()?;
            if arms.is_empty() {
                quote!()
            } else {
                quote!(match self { #(#arms)* })
            }
        }
        Data::Union(data) => {
            return Err(syn::Error::new(
                data.union_token.span,
                "Dependencies cannot be derived for unions",
            ))
        }
    };

    let name = &input.ident;
    let mut generics = input.generics.clone();
    for param in generics.type_params_mut() {
        param.bounds.push(syn::parse_quote!(#krate::Dependencies));
    }
    let (impl_generics, type_generics, where_clause) = generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Dependencies for #name #type_generics #where_clause {
            fn collect_deps(&self, deps: &mut #krate::DepSet) {
                #body
            }
        }
    })
}

/// Where to point at a field: its name, or its type for a tuple field.
fn field_span(field: &syn::Field) -> Span {
    match &field.ident {
        Some(name) => name.span(),
        None => field.ty.span(),
    }
}

/// Walks one field: spanned at its type, so a type without `Dependencies` is reported there.
fn walk(field: &syn::Field, access: TokenStream2) -> TokenStream2 {
    let ty = &field.ty;
    quote_spanned! {ty.span()=>
        <#ty as ::matroska_cache::Dependencies>::collect_deps(&#access, deps);
    }
}

/// The dependency on the value itself, from its key fields.
fn own_dep(
    own: &Own,
    keys: &[(&syn::Field, TokenStream2)],
    input: &DeriveInput,
) -> syn::Result<TokenStream2> {
    let (literal, max) =
        match own {
            Own::None => return match keys.first() {
                Some((field, _)) => Err(syn::Error::new(
                    field_span(field),
                    "a #[deps(key)] field needs #[deps(id = \"kind\")] or #[deps(pk = \"model\")] \
                     on the type",
                )),
                None => Ok(quote!()),
            },
            Own::Id(literal) => (literal, 1),
            Own::Pk(literal) => (literal, 4),
        };
    if keys.is_empty() {
        return Err(syn::Error::new(
            literal.span(),
            format!(
                "{} has no key: mark its key field with #[deps(key)]",
                input.ident
            ),
        ));
    }
    if let Some((field, _)) = keys.get(max) {
        let message = if max == 1 {
            "an id dependency has one key; use #[deps(pk = \"model\")] for a composite key"
        } else {
            "a primary key has at most four #[deps(key)] columns"
        };
        return Err(syn::Error::new(field_span(field), message));
    }
    // Each key column is spanned at its field's type, so a type that cannot be a key
    // (no `Display` for an id, no `PrimaryKey` for a pk) is reported there.
    let krate = quote!(::matroska_cache);
    let insert = match own {
        Own::Id(kind) => {
            let (field, access) = &keys[0];
            quote_spanned!(field.ty.span()=> deps.insert(#krate::dep::id(#kind, &#access));)
        }
        Own::Pk(model) => {
            let columns = keys.iter().map(|(field, access)| {
                quote_spanned!(field.ty.span()=> #krate::dep::PrimaryKey::columns(&#access, &mut columns);)
            });
            quote! {
                let mut columns = ::std::vec::Vec::new();
                #(#columns)*
                deps.insert(#krate::dep::pk_columns(#model, &columns));
            }
        }
        Own::None => unreachable!("handled above"),
    };
    Ok(insert)
}

fn own_attribute(input: &DeriveInput) -> syn::Result<Own> {
    let mut own = Own::None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("deps")) {
        attr.parse_nested_meta(|meta| {
            let kind = if meta.path.is_ident("id") {
                "id"
            } else if meta.path.is_ident("pk") {
                "pk"
            } else {
                return Err(meta.error(
                    "unknown #[deps] option on a type: expected id = \"kind\" or pk = \"model\"",
                ));
            };
            let literal: LitStr = meta.value()?.parse()?;
            if literal.value().is_empty() {
                return Err(syn::Error::new(
                    literal.span(),
                    "the name must not be empty",
                ));
            }
            if !matches!(own, Own::None) {
                return Err(meta.error("give either one id = \"...\" or one pk = \"...\""));
            }
            own = if kind == "id" {
                Own::Id(literal)
            } else {
                Own::Pk(literal)
            };
            Ok(())
        })?;
    }
    Ok(own)
}

fn field_role(field: &syn::Field) -> syn::Result<Role> {
    let mut role = Role::Walk;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("deps")) {
        attr.parse_nested_meta(|meta| {
            let next = if meta.path.is_ident("key") {
                Role::Key
            } else if meta.path.is_ident("skip") {
                Role::Skip
            } else {
                return Err(meta.error("unknown #[deps] option on a field: expected key or skip"));
            };
            if !matches!(role, Role::Walk) {
                return Err(meta.error("a field is either #[deps(key)] or #[deps(skip)], not both"));
            }
            role = next;
            Ok(())
        })?;
    }
    Ok(role)
}
