// Package lua holds flashstock's Redis scripts. Each operation is one script file whose
// header documents its KEYS, ARGV and reply; prelude.lua is prepended to every script when
// it is loaded, so the helpers live in one place.
package lua

import _ "embed"

var (
	//go:embed prelude.lua
	prelude string
	//go:embed take.lua
	take string
	//go:embed settle.lua
	settle string
	//go:embed cancel.lua
	cancel string
	//go:embed create.lua
	create string
	//go:embed update.lua
	update string
	//go:embed adjust.lua
	adjust string
	//go:embed rebase.lua
	rebase string
	//go:embed queue.lua
	queue string
	//go:embed xcart.lua
	xcart string
	//go:embed xcancel.lua
	xcancel string
	//go:embed throttle.lua
	Throttle string // standalone: no prelude
	//go:embed assign.lua
	Assign string // standalone: no prelude
)

// The scripts' full source, ready for redis.NewScript.
var (
	Take    = prelude + take
	Settle  = prelude + settle
	Cancel  = prelude + cancel
	Create  = prelude + create
	Update  = update
	Adjust  = prelude + adjust
	Rebase  = prelude + rebase
	Queue   = prelude + queue
	XCart   = prelude + xcart
	XCancel = prelude + xcancel
)
