// Command gittestserver serves the bare git repositories under a directory over
// smart HTTP on loopback — Flux's own test git server (fluxcd/pkg/gittestserver),
// which runs the git CLI underneath. A push to a repository that does not exist
// yet creates it. The server writes its base URL to a file once it listens and
// serves until SIGTERM or SIGINT.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/fluxcd/pkg/gittestserver"
)

func main() {
	root := flag.String("root", "", "directory holding the bare repositories")
	urlFile := flag.String("url-file", "", "file to write the server's base URL to")
	flag.Parse()
	if *root == "" || *urlFile == "" {
		log.Fatal("--root and --url-file are required")
	}
	server := gittestserver.NewGitServer(*root).AutoCreate()
	if err := server.StartHTTP(); err != nil {
		log.Fatalf("starting the git server: %v", err)
	}
	defer server.StopHTTP()
	tmp := *urlFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(server.HTTPAddress()+"\n"), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(tmp, *urlFile); err != nil {
		log.Fatal(err)
	}
	log.Printf("serving %s at %s", *root, server.HTTPAddress())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
