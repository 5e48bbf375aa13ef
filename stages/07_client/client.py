"""Stage 07: the original assignment's chat client, bugs and all.

Run it:   python stages/07_client/client.py [--host HOST] [--port PORT]   (defaults: 127.0.0.1 9801)

This is the client as the original assignment wrote it (in our own words),
with every one of its bugs kept. Read stages/07_client/README.md: your job
is to find each bug, see it happen, and fix it.
"""

import argparse
import socket
import sys
import threading


def parse_args():
    parser = argparse.ArgumentParser(description="Chat client.")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9801, help="the server's port (default: 9801)")
    return parser.parse_args()


def receive_messages(client):
    while True:
        try:
            message = client.recv(1024).decode("utf-8")
            if message:
                print(message)
        except:
            print("An error occurred!")
            client.close()
            break


def send_messages(client):
    while True:
        message = input()
        client.send(message.encode("utf-8"))
        if message == "/exit":
            print("You have left the chat")
            client.close()
            break


def main():
    args = parse_args()
    username = input("Enter your username: ")
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect((args.host, args.port))
    except Exception as error:
        print(f"Error connecting to server: {error}")
        sys.exit(1)
    client.send(username.encode("utf-8"))

    receive_thread = threading.Thread(target=receive_messages, args=(client,))
    receive_thread.start()
    send_thread = threading.Thread(target=send_messages, args=(client,))
    send_thread.start()


if __name__ == "__main__":
    main()
