package engine

// ScriptHashes returns the SHA1 of take.lua's cluster ("#!lua") variant and of its plain
// form, for tests of what reaches a cluster.
func ScriptHashes() (shebang, plain string) {
	return clusterVariant(scriptTake).Hash(), scriptTake.Hash()
}
