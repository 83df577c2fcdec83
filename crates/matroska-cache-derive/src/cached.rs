//! `#[cached]`: an async fn read through a `MatroskaCache`.
//!
//! The expansion is three functions: the function itself (its key, then
//! `matroska_cache::__private::call` with the body), `<name>_uncached` (the body as written)
//! and `<name>_key` (the key). The key format and the call live in `matroska_cache`'s
//! `cached_fn` module, not here.

use std::time::Duration;

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, FnArg, GenericParam, ImplItemFn, LitBool, LitInt, LitStr, Pat, ReturnType,
    Type,
};

/// The longest TTL an entry may have (`matroska_cache::MAX_TTL`: 100 years).
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The attribute's options.
struct Options {
    cache: Option<Expr>,
    ttl: Option<(Duration, Span)>,
    refresh_after: Option<(Duration, Span)>,
    fail_safe: Option<(Duration, Span)>,
    version: Option<u32>,
    key: Option<Expr>,
    name: Option<LitStr>,
    cache_none: Option<(bool, Span)>,
    deps_from_value: bool,
}

/// How the function's result is stored, read from the written return type.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// `Result<T, E>`: `Ok` values are stored, errors returned unchanged.
    Result,
    /// `Option<T>`: `Some` values are stored, and `None` with `cache_none = true`.
    Option,
    /// Anything else: always stored.
    Plain,
}

pub(crate) fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let options = parse_options(attr)?;
    // `ImplItemFn` also parses free functions (their visibility, attributes and signature are
    // the same), and keeps `self` receivers.
    let function: ImplItemFn = syn::parse2(item)?;
    expand_fn(options, function)
}

fn parse_options(attr: TokenStream2) -> syn::Result<Options> {
    let mut options = Options {
        cache: None,
        ttl: None,
        refresh_after: None,
        fail_safe: None,
        version: None,
        key: None,
        name: None,
        cache_none: None,
        deps_from_value: false,
    };
    let parser = syn::meta::parser(|meta| {
        let path = &meta.path;
        if path.is_ident("cache") {
            options.cache = Some(meta.value()?.parse()?);
        } else if path.is_ident("ttl") {
            let text: LitStr = meta.value()?.parse()?;
            options.ttl = Some((parse_duration("ttl", &text)?, text.span()));
        } else if path.is_ident("refresh_after") {
            let text: LitStr = meta.value()?.parse()?;
            options.refresh_after = Some((parse_duration("refresh_after", &text)?, text.span()));
        } else if path.is_ident("fail_safe") {
            let text: LitStr = meta.value()?.parse()?;
            options.fail_safe = Some((parse_duration("fail_safe", &text)?, text.span()));
        } else if path.is_ident("version") {
            let version: LitInt = meta.value()?.parse()?;
            options.version = Some(version.base10_parse()?);
        } else if path.is_ident("key") {
            options.key = Some(meta.value()?.parse()?);
        } else if path.is_ident("name") {
            let name: LitStr = meta.value()?.parse()?;
            if name.value().is_empty() {
                return Err(syn::Error::new(name.span(), "the name must not be empty"));
            }
            if name
                .value()
                .chars()
                .any(|c| c.is_control() || c == '(' || c == '=')
            {
                return Err(syn::Error::new(
                    name.span(),
                    "the name must not hold control characters, `(` or `=`",
                ));
            }
            options.name = Some(name);
        } else if path.is_ident("cache_none") {
            let value: LitBool = meta.value()?.parse()?;
            options.cache_none = Some((value.value, value.span()));
        } else if path.is_ident("deps_from_value") {
            options.deps_from_value = if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<LitBool>()?.value
            } else {
                true
            };
        } else {
            return Err(meta.error(
                "unknown option; #[cached] takes cache = EXPR, ttl = \"5m\", \
                 refresh_after = \"4m\", fail_safe = \"1h\", version = N, key = EXPR, \
                 name = \"...\", cache_none = true, deps_from_value",
            ));
        }
        Ok(())
    });
    parser.parse2(attr)?;
    Ok(options)
}

/// A humantime duration ("5m", "1h 30m", "250ms") for the option `what`, above zero and at
/// most 100 years.
fn parse_duration(what: &str, text: &LitStr) -> syn::Result<Duration> {
    let duration = humantime::parse_duration(&text.value()).map_err(|error| {
        syn::Error::new(
            text.span(),
            format!(
                "the {what} is not a duration ({error}); write it like \"90s\", \"5m\" or \"1h 30m\""
            ),
        )
    })?;
    if duration.is_zero() {
        return Err(syn::Error::new(
            text.span(),
            format!("the {what} must be above zero"),
        ));
    }
    if duration > MAX_TTL {
        return Err(syn::Error::new(
            text.span(),
            format!("the {what} must be at most 100 years (matroska_cache::MAX_TTL)"),
        ));
    }
    Ok(duration)
}

/// A parameter of the function.
struct Param {
    ident: syn::Ident,
    ty: Type,
    skip: bool,
}

fn expand_fn(options: Options, mut function: ImplItemFn) -> syn::Result<TokenStream2> {
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "#[cached] caches async functions; make this one `async fn`",
        ));
    }
    let Some(cache) = &options.cache else {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[cached] needs `cache = EXPR`, an expression that derefs to a MatroskaCache \
             (a static LazyLock, `self.cache`)",
        ));
    };
    let Some((ttl, _)) = options.ttl else {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[cached] needs `ttl = \"...\"`, how long a result is kept (\"90s\", \"5m\", \"1h\")",
        ));
    };
    if let Some((refresh_after, span)) = options.refresh_after {
        if refresh_after >= ttl {
            return Err(syn::Error::new(
                span,
                "refresh_after must be shorter than the ttl (a hit after it refreshes the entry \
                 in the background before it expires)",
            ));
        }
        let borrowed_self = sig.inputs.iter().find_map(|input| match input {
            FnArg::Receiver(r) if r.reference.is_some() => Some(r.span()),
            FnArg::Typed(t) if matches!(*t.ty, Type::Reference(_)) => Some(t.ty.span()),
            _ => None,
        });
        if let Some(span) = borrowed_self {
            return Err(syn::Error::new(
                span,
                "with refresh_after the body may run in a background task after the call \
                 returns, so it cannot borrow its arguments: take them by value (an Arc, a \
                 clone) or drop refresh_after",
            ));
        }
    }
    let (ret, shape) = match &sig.output {
        ReturnType::Default => (quote!(()), Shape::Plain),
        ReturnType::Type(_, ty) => (ty.to_token_stream(), shape_of(ty)?),
    };
    if let Some((_, span)) = options.cache_none {
        if shape != Shape::Option {
            return Err(syn::Error::new(
                span,
                "cache_none applies to functions that return an Option",
            ));
        }
    }

    // Parameters: their names, and `#[skip]` taken off (it is not a real attribute).
    let mut receiver = None;
    let mut params = Vec::new();
    for input in function.sig.inputs.iter_mut() {
        match input {
            FnArg::Receiver(r) => receiver = Some(r.clone()),
            FnArg::Typed(typed) => {
                let before = typed.attrs.len();
                typed.attrs.retain(|a| !a.path().is_ident("skip"));
                let skip = typed.attrs.len() != before;
                let Pat::Ident(pat) = &*typed.pat else {
                    return Err(syn::Error::new(
                        typed.pat.span(),
                        "#[cached] needs each parameter to be a plain name (destructure it in the body)",
                    ));
                };
                if pat.by_ref.is_some() || pat.subpat.is_some() {
                    return Err(syn::Error::new(
                        typed.pat.span(),
                        "#[cached] needs each parameter to be a plain name",
                    ));
                }
                params.push(Param {
                    ident: pat.ident.clone(),
                    ty: (*typed.ty).clone(),
                    skip,
                });
            }
        }
    }

    let sig = &function.sig;
    let vis = &function.vis;
    let block = &function.block;
    let name = &sig.ident;
    let uncached = format_ident!("{}_uncached", name);
    let key_fn = format_ident!("{}_key", name);
    let (docs, attrs): (Vec<&Attribute>, Vec<&Attribute>) = function
        .attrs
        .iter()
        .partition(|a| a.path().is_ident("doc"));
    let key_attrs = attrs.iter().filter(|a| {
        ["cfg", "cfg_attr", "allow", "expect", "warn", "deny"]
            .iter()
            .any(|n| a.path().is_ident(n))
    });
    let generics = &sig.generics;
    let where_clause = &generics.where_clause;
    let name_text = name.to_string();

    // The key, from the parameters in scope (`key` borrows them).
    let own_owner = match &receiver {
        Some(_) => quote!(::std::any::type_name::<Self>()),
        None => quote!(::core::module_path!()),
    };
    let key = match &options.key {
        Some(expr) => quote! {
            ::matroska_cache::__private::key_from_expression(#own_owner, #name_text, &(#expr))
        },
        None => {
            let (owner, name_text) = match &options.name {
                Some(name) => (quote!(""), name.value()),
                None => (own_owner, name_text.clone()),
            };
            let type_args = generics.params.iter().filter_map(|p| match p {
                GenericParam::Type(t) => {
                    let ident = &t.ident;
                    Some(quote!(::std::any::type_name::<#ident>()))
                }
                _ => None,
            });
            let args = params.iter().filter(|p| !p.skip).map(|p| {
                let ident = &p.ident;
                quote_spanned! {p.ty.span()=>
                    &#ident as &dyn ::matroska_cache::__private::KeyArgument
                }
            });
            let version = match options.version {
                Some(v) => quote!(::core::option::Option::Some(#v)),
                None => quote!(::core::option::Option::None),
            };
            quote! {
                ::matroska_cache::__private::key(
                    #owner,
                    #name_text,
                    &[#(#type_args),*],
                    #version,
                    &[#(#args),*],
                )
            }
        }
    };

    // `<name>_key`: the receiver (by reference) and the parameters that are part of the key.
    let key_receiver = receiver.as_ref().map(|_| quote!(&self,));
    let key_params = params.iter().filter(|p| !p.skip).map(|p| {
        let (ident, ty) = (&p.ident, &p.ty);
        quote!(#ident: #ty)
    });
    let key_doc = format!(
        " The cache key of `{name_text}` for these arguments (to inspect or delete its entry, \
         with the `matroska` CLI say). Arguments that cannot be encoded give a text that names \
         no entry."
    );
    let uncached_doc =
        format!(" `{name_text}` without the cache: runs the body, reads and stores nothing.");

    let deps = if options.deps_from_value {
        quote!(::matroska_cache::__private::value_deps)
    } else {
        quote!(::matroska_cache::__private::no_deps)
    };
    let keep = match (shape, options.cache_none) {
        (Shape::Option, None | Some((false, _))) => {
            quote!(::core::option::Option::is_some)
        }
        _ => quote!(::matroska_cache::__private::always),
    };
    let call = match (shape, options.refresh_after) {
        (Shape::Result, None) => quote!(::matroska_cache::__private::call),
        (Shape::Option | Shape::Plain, None) => {
            quote!(::matroska_cache::__private::call_infallible)
        }
        (Shape::Result, Some(_)) => quote!(::matroska_cache::__private::call_refreshing),
        (Shape::Option | Shape::Plain, Some(_)) => {
            quote!(::matroska_cache::__private::call_infallible_refreshing)
        }
    };
    let duration = |d: Duration| {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(::std::time::Duration::new(#secs, #nanos))
    };
    let ttl_tokens = duration(ttl);
    let fail_safe = match options.fail_safe {
        Some((window, _)) => {
            let window = duration(window);
            quote!(::core::option::Option::Some(#window))
        }
        None => quote!(::core::option::Option::None),
    };
    let refresh_after = options.refresh_after.map(|(after, _)| {
        let after = duration(after);
        quote!(#after,)
    });

    let mut uncached_sig = sig.clone();
    uncached_sig.ident = uncached.clone();

    Ok(quote! {
        #(#docs)*
        #(#attrs)*
        #vis #sig {
            let __matroska_cache: &::matroska_cache::MatroskaCache = &#cache;
            let __matroska_key = #key;
            #call(
                __matroska_cache,
                __matroska_key,
                ::matroska_cache::__private::Lifetimes {
                    ttl: #ttl_tokens,
                    fail_safe: #fail_safe,
                },
                #refresh_after
                move || async move {
                    // The body's `return`s and `?`s leave this block: give it the
                    // function's return type.
                    #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::empty_loop, clippy::needless_return)]
                    if false {
                        let __matroska_return: #ret = loop {};
                        return __matroska_return;
                    }
                    #block
                },
                #deps,
                #keep,
            )
            .await
        }

        #[doc = #uncached_doc]
        #(#attrs)*
        #[allow(dead_code)]
        #vis #uncached_sig #block

        #[doc = #key_doc]
        #(#key_attrs)*
        #[allow(dead_code, unused_variables, clippy::needless_pass_by_value)]
        #vis fn #key_fn #generics (#key_receiver #(#key_params),*) -> ::std::string::String #where_clause {
            ::matroska_cache::__private::key_or_reason(#key)
        }
    })
}

/// The storage rule a return type asks for: by its last path segment.
fn shape_of(ty: &Type) -> syn::Result<Shape> {
    match ty {
        Type::ImplTrait(_) => Err(syn::Error::new(
            ty.span(),
            "#[cached] stores the result, so it needs a concrete type (Serialize + DeserializeOwned), \
             not `impl Trait`",
        )),
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last().map(|s| s.ident.to_string());
            Ok(match last.as_deref() {
                Some("Result") => Shape::Result,
                Some("Option") => Shape::Option,
                _ => Shape::Plain,
            })
        }
        Type::Paren(inner) => shape_of(&inner.elem),
        Type::Group(inner) => shape_of(&inner.elem),
        _ => Ok(Shape::Plain),
    }
}
