print("trent")
