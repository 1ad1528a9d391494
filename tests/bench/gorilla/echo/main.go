// Reference peer for `make bench`: the gorilla/websocket echo server, as in gorilla's own
// examples/echo (ReadMessage, then WriteMessage of the same bytes), on loopback.
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/gorilla/websocket"
)

// The zero Upgrader is what the gorilla example uses: 4 KiB read and write buffers, no compression.
var upgrader = websocket.Upgrader{}

func echo(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	for {
		mt, message, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(mt, message); err != nil {
			return
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "listen address")
	path := flag.String("path", "/echo", "echo endpoint")
	flag.Parse()
	http.HandleFunc(*path, echo)
	log.Printf("gorilla-echo listening on %s%s", *addr, *path)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
