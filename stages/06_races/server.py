# Multi-user chat server with threads.
#
# This is the original assignment's server, as it was handed in: it works when
# two people try it, and breaks under real use. Stage 06 is to find out why and
# make it correct (read README.md). Only the command line and the start-up line
# were changed, so that the tests can run it:
#   python stages/06_races/server.py [--host HOST] [--port PORT]   (defaults: 127.0.0.1, 9801)

import argparse
import socket
import threading

HOST = "127.0.0.1"
PORT = 9801
maxUsers = 10

clients = []
usernames = {}


def broadcast(message, sender):
    for client in clients:
        if client != sender:
            try:
                client.send(message.encode())
            except:
                client.close()
                clients.remove(client)


def handle_client(client):
    username = client.recv(1024).decode().strip()
    usernames[client] = username
    broadcast(f"{username} joined the chat room!\n", client)

    while True:
        try:
            data = client.recv(1024)
            if not data:
                break
            message = data.decode().strip()
            if message == "/exit":
                broadcast(f"{username} exited the chat room\n", client)
                clients.remove(client)
                del usernames[client]
                client.close()
                break
            if message:
                broadcast(f"{username}: {message}\n", client)
        except:
            clients.remove(client)
            del usernames[client]
            client.close()
            break


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args()

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((args.host, args.port))
    server.listen(maxUsers)
    host, port = server.getsockname()[:2]
    print(f"Server started on {host}:{port}", flush=True)

    while True:
        client, address = server.accept()
        clients.append(client)
        thread = threading.Thread(target=handle_client, args=(client,))
        thread.start()


if __name__ == "__main__":
    main()
