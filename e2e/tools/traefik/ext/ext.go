// Package ext stands in for Traefik's extension points of its dynamic configuration: the
// open-source build embeds them as empty structs (dynamic.HTTPConfiguration and dynamic.Router
// embed ext.HTTP and ext.Router inline), so empty structs are exactly what they add.
package ext

// HTTP extends dynamic.HTTPConfiguration; it adds nothing.
type HTTP struct{}

// Router extends dynamic.Router; it adds nothing.
type Router struct{}
