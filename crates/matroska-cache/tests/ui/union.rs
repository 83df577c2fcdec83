use matroska_cache::Dependencies;

#[derive(Dependencies)]
union Bits {
    a: u32,
    b: f32,
}

fn main() {}
