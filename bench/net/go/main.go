// SPDX-License-Identifier: MIT
// Go peers for bench/net/run_net.py, standard library only, GOMAXPROCS=1:
//
//	netpeer http PORT FILE   net/http: GET / -> "Hello, World!" (text/plain),
//	                         GET /file -> FILE's bytes (read once)
//	netpeer echo PORT        net: a goroutine per connection, io.Copy-style
//	                         read/write loop with a 4 KiB buffer
//
// Both listen on 127.0.0.1:PORT (0: any free port) and print
// "listening on 127.0.0.1:PORT" like the examples.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
)

func listen(port string) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on 127.0.0.1:%d\n", ln.Addr().(*net.TCPAddr).Port)
	return ln
}

func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	runtime.GOMAXPROCS(1)
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: netpeer http PORT FILE | echo PORT")
		os.Exit(2)
	}
	ln := listen(os.Args[2])
	switch os.Args[1] {
	case "http":
		body, err := os.ReadFile(os.Args[3])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		hello := []byte("Hello, World!")
		mux := http.NewServeMux()
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(hello)
		})
		mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		})
		http.Serve(ln, mux)
	case "echo":
		for {
			c, err := ln.Accept()
			if err != nil {
				continue
			}
			go echo(c)
		}
	}
}
