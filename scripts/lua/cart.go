package lua

import _ "embed"

// The cart's scripts. Carts are not stock: these need none of the prelude's helpers.
var (
	//go:embed cart_put.lua
	CartPut string
	//go:embed cart_remove.lua
	CartRemove string
)
